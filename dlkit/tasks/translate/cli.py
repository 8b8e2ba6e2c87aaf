"""`dlkit translate` and `dlkit translate-train`: thin commands over dlkit.tasks.translate (no torch at import)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import Device, Json, MaxTime, Out, Precision, Quiet, Resume, SaveDtype, Seed

app = typer.Typer()

_T = "Training"


@app.command("translate-train")
def translate_train(
    src: Annotated[Optional[Path], typer.Option("--src", help="Source sentences, one per line (plain or .gz).")] = None,
    tgt: Annotated[Optional[Path], typer.Option("--tgt", help="Target sentences aligned with --src.")] = None,
    tsv: Annotated[Optional[Path], typer.Option("--tsv", help="Or: a TSV file of 'source<TAB>target' pairs.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Or: a Multi30k-style folder (train/val.LANG[.gz]) with --pair.")] = None,
    pair: Annotated[Optional[str], typer.Option("--pair", help="Languages SRC-TGT, e.g. en-fr (Moses rules; folder files).")] = None,
    valid_src: Annotated[Optional[Path], typer.Option("--valid-src", help="Validation sources (default: folder's val or 5% held out).")] = None,
    valid_tgt: Annotated[Optional[Path], typer.Option("--valid-tgt", help="Validation targets aligned with --valid-src.")] = None,
    valid_max: Annotated[int, typer.Option("--valid-max", help="Decode at most N validation sentences for BLEU (0: all).")] = 0,
    out: Out = Path("runs/translate"),
    arch: Annotated[str, typer.Option("--arch", help="lstm | lstm-attention | transformer", rich_help_panel="Model")] = "transformer",
    preset: Annotated[str, typer.Option("--preset", help="Model size: tiny | small | base.", rich_help_panel="Model")] = "small",
    d_model: Annotated[Optional[int], typer.Option("--d-model", help="Hidden size (default: the preset's).", rich_help_panel="Model")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", help="Encoder and decoder layers (default: the preset's).", rich_help_panel="Model")] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Dropout (default: the preset's).", rich_help_panel="Model")] = None,
    attention: Annotated[str, typer.Option("--attention", help="lstm-attention: luong | bahdanau.", rich_help_panel="Model")] = "luong",
    no_reverse: Annotated[bool, typer.Option("--no-reverse", help="lstm: do not reverse the source.", rich_help_panel="Model")] = False,
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Subword vocabulary size.", rich_help_panel="Model")] = 8000,
    subword: Annotated[str, typer.Option("--subword", help="bpe | unigram (sentencepiece).", rich_help_panel="Model")] = "bpe",
    separate_vocab: Annotated[bool, typer.Option("--separate-vocab", help="Separate source/target subwords (default joint).", rich_help_panel="Model")] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Padded tokens per batch per process.", rich_help_panel=_T)] = 4096,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training data.", rich_help_panel=_T)] = 20,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (inverse-sqrt decay after warmup).", rich_help_panel=_T)] = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", help="Linear warmup steps.", rich_help_panel=_T)] = 1000,
    weight_decay: Annotated[float, typer.Option("--weight-decay", rich_help_panel=_T)] = 0.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", rich_help_panel=_T)] = 0.1,
    clip: Annotated[float, typer.Option("--clip", help="Gradient-norm clipping (0: off).", rich_help_panel=_T)] = 1.0,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between validations (0: each epoch).", rich_help_panel=_T)] = 0,
    patience: Annotated[int, typer.Option("--patience", help="Stop after N validations without better BLEU (0: never).", rich_help_panel=_T)] = 5,
    average_last: Annotated[int, typer.Option("--average-last", help="Average the last N validated checkpoints.", rich_help_panel=_T)] = 1,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 1,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a translation model (LSTM, LSTM with attention, or Transformer) on sentence pairs.

    The best model by validation BLEU goes to OUT/model.safetensors (its subword model inside);
    OUT/model.state.pt lets --resume continue exactly. Ctrl-C saves the state and exits with code 130.

    Examples:

      dlkit translate-train --data multi30k/ --pair en-fr --arch transformer --preset small --out runs/en-fr

      dlkit translate-train --src train.en --tgt train.de --arch lstm-attention --epochs 10

      torchrun --nproc_per_node=2 -m dlkit translate-train --tsv pairs.tsv --pair en-de --out runs/ddp
    """
    for name, value in (("--epochs", epochs), ("--max-tokens", max_tokens), ("--vocab-size", vocab_size),
                        ("--average-last", average_last)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1 (got {value})")
    if max_tokens < 16:
        raise UsageError(f"--max-tokens must be at least 16 (got {max_tokens})")
    if subword not in ("bpe", "unigram"):
        raise UsageError(f"--subword must be bpe or unigram (got {subword})")
    if attention not in ("luong", "bahdanau"):
        raise UsageError(f"--attention must be luong or bahdanau (got {attention})")
    if save_dtype not in ("fp32", "fp16"):
        raise UsageError(f"--save-dtype must be fp32 or fp16 (got {save_dtype})")
    if lr <= 0 or not 0 <= label_smoothing < 1:
        raise UsageError("--lr must be positive and --label-smoothing in [0, 1)")
    if (src is None) != (tgt is None):
        raise UsageError("--src and --tgt go together")

    from dlkit.core.checkpoint import check_writable_dir
    from dlkit.core.interrupt import StopSignal, catch_signals
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime, shutdown
    from dlkit.tasks.translate.train import TrainConfig, train

    check_writable_dir(out)
    cfg = TrainConfig(
        src=_s(src), tgt=_s(tgt), tsv=_s(tsv), data=_s(data), pair=pair, valid_src=_s(valid_src),
        valid_tgt=_s(valid_tgt), valid_max=valid_max, out=str(out), arch=arch, preset=preset, d_model=d_model,
        layers=layers, dropout=dropout, attention=attention, reverse_source=not no_reverse, vocab_size=vocab_size,
        subword=subword, joint_vocab=not separate_vocab, max_tokens=max_tokens, epochs=epochs, lr=lr, warmup=warmup,
        weight_decay=weight_decay, label_smoothing=label_smoothing, clip=clip, eval_every=eval_every,
        patience=patience, average_last=average_last, max_time=max_time * 60 if max_time else None, seed=seed,
        save_dtype=save_dtype, resume=resume,
    )
    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed)
    try:
        with catch_signals(StopSignal()) as stop:
            result = train(cfg, rt, report, stop)
    finally:
        shutdown(rt)
    report.event("result", model=result.model_path, steps=result.steps, best_val_bleu=result.best_bleu,
                 seconds=round(result.seconds, 1), tokens_per_s=round(result.tokens_per_s), params=result.params)
    report.info(f"best validation BLEU {result.best_bleu:.2f}; {result.steps} steps; "
                f"{result.tokens_per_s:,.0f} target tokens/s; model: {result.model_path}")
    if not json_out and rt.is_main:
        typer.echo(result.model_path)


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


@app.command("translate")
def translate(
    text: Annotated[Optional[List[str]], typer.Argument(help="Sentences to translate (default: stdin, line by line).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")] = "multi30k-en-fr",
    beam: Annotated[int, typer.Option("--beam", "-b", help="Beam size (1: greedy).")] = 5,
    n_best: Annotated[int, typer.Option("--n-best", help="Print the K best translations per line with scores.")] = 1,
    length_penalty: Annotated[float, typer.Option("--length-penalty", help="GNMT length penalty alpha.")] = 0.6,
    max_len_ratio: Annotated[float, typer.Option("--max-len-ratio", help="Longest output: ratio x source subwords + 10.")] = 1.5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sentences decoded together (output streams per batch).")] = 64,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference translations: print BLEU to stderr.")] = None,
    attention_plot: Annotated[Optional[Path], typer.Option("--attention-plot", help="Write the first sentence's alignment heatmap (PNG).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Translate text: arguments or stdin, exactly one output line per input line, in order.

    Examples:

      echo "A dog is running on the grass." | dlkit translate --model multi30k-en-fr

      dlkit translate -m multi30k-en-de --beam 5 --n-best 3 "Two men are playing chess."

      dlkit translate -m multi30k-en-fr < test.en --ref test.fr > out.fr
    """
    if beam < 1 or n_best < 1 or batch_size < 1:
        raise UsageError("--beam, --n-best and --batch-size must be at least 1")
    if n_best > beam:
        raise UsageError(f"--n-best {n_best} needs --beam of at least {n_best}")
    if max_len_ratio <= 0:
        raise UsageError(f"--max-len-ratio must be positive (got {max_len_ratio})")
    refs = None
    if ref is not None:
        from dlkit.tasks.translate.data import read_lines

        refs = read_lines(ref)

    from dlkit.core.io import iter_input_lines
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.core.zoo import resolve_model
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_stream

    report = Reporter(quiet=quiet, json_mode=False)
    path = resolve_model(model, "translate")
    rt = make_runtime(device, precision, 0, distributed=False)  # auto: fp32 on the CPU, bf16/fp16 on a GPU
    tr = load_translator(path, rt.device)
    dc = DecodeConfig(beam=beam, n_best=n_best, alpha=length_penalty, max_len_ratio=max_len_ratio, batch_size=batch_size)
    if not text and sys.stdin.isatty():
        dc.batch_size = 1  # typing at a terminal: answer each line at once
    lines = iter_input_lines(text, warn=report.warn)
    hyps: list[str] = []
    with rt.autocast():
        _write(translate_stream(tr, lines, dc, report.warn), hyps, json_out, n_best)
    if attention_plot is not None:
        from dlkit.tasks.translate.infer import plot_attention

        first = next((t for t in (text or []) if t.strip()), None) if text else tr.first_source
        if first is None:
            report.warn("no non-blank input line: no attention plot written")
        else:
            report.info(f"attention plot: {plot_attention(tr, first, attention_plot)}")
    if refs is not None:
        _score(tr, hyps, refs, ref, json_out, report)


def _write(results, hyps: list[str], json_out: bool, n_best: int) -> None:
    """Print each result as it comes (one line per input line, or K for --n-best); flush after each batch."""
    for r in results:
        flush = r.pop("flush", False)
        hyps.append(r["translation"])
        if json_out:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
        elif n_best > 1:
            sys.stdout.write("".join(f"{h['score']:.4f}\t{h['translation']}\n" for h in r["n_best"]) if r["n_best"] else "\n")
        else:
            sys.stdout.write(r["translation"] + "\n")
        if flush:
            sys.stdout.flush()
    sys.stdout.flush()


def _score(tr, hyps: list[str], refs: list[str], ref: Path, json_out: bool, report) -> None:
    from dlkit.core.errors import DataError
    from dlkit.tasks.translate.metrics import bleu

    if len(refs) != len(hyps):
        raise DataError(f"--ref '{ref}' has {len(refs):,} lines but the input had {len(hyps):,}; they must align")
    b = bleu(hyps, refs, tr.pipe.tgt_lang)
    if json_out:
        sys.stdout.write(json.dumps({"event": "bleu", "sacrebleu": b.sacrebleu, "signature": b.signature,
                                     "bleu_lc_tok": b.lc_tok, "sentences": b.sentences}) + "\n")
        sys.stdout.flush()
    if not report.quiet:
        print(f"BLEU: {b.summary()}", file=sys.stderr, flush=True)
