"""`dlkit translate` and `dlkit translate-train`: thin commands over dlkit.tasks.translate (no torch at import)."""

from __future__ import annotations

import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated, List, Literal, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (BatchSize, Device, Epochs, Json, Lr, MaxTime, Out, Overwrite, Precision, Quiet, Resume,
                                SaveDtype, Seed, Threads)

app = typer.Typer()

_T = "Training"
_M = "Model"
Arch = Literal["lstm", "lstm-attention", "transformer"]
Size = Literal["tiny", "small", "base"]
AttentionKind = Literal["luong", "bahdanau"]
Subword = Literal["bpe", "unigram"]


@app.command("translate-train")
def translate_train(
    src: Annotated[Optional[Path], typer.Option("--src", help="Source sentences, one per line (plain or .gz).")] = None,
    tgt: Annotated[Optional[Path], typer.Option("--tgt", help="Target sentences aligned with --src.")] = None,
    tsv: Annotated[Optional[Path], typer.Option("--tsv", help="Or: a TSV file of 'source<TAB>target' pairs.")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Or: a Multi30k-style folder (train/val.LANG[.gz]) with --pair.")] = None,
    pair: Annotated[Optional[str], typer.Option("--pair", help="Languages SRC-TGT, e.g. en-fr (Moses rules; folder files).")] = None,
    valid_src: Annotated[Optional[Path], typer.Option("--valid-src", help="Validation sources (default: folder's val or 5% held out).")] = None,
    valid_tgt: Annotated[Optional[Path], typer.Option("--valid-tgt", help="Validation targets aligned with --valid-src.")] = None,
    valid_max: Annotated[int, typer.Option("--valid-max", min=0, help="Decode at most N validation sentences for BLEU (0: all).")] = 0,
    out: Out = Path("runs/translate"),
    arch: Annotated[Arch, typer.Option("--arch", help="Architecture.", rich_help_panel=_M)] = "transformer",
    preset: Annotated[Size, typer.Option("--preset", help="Model size.", rich_help_panel=_M)] = "small",
    d_model: Annotated[Optional[int], typer.Option("--d-model", min=8, help="Hidden size (default: the preset's).", rich_help_panel=_M)] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", min=1, help="Encoder and decoder layers (default: the preset's).", rich_help_panel=_M)] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", min=0.0, max=0.99, help="Dropout (default: the preset's).", rich_help_panel=_M)] = None,
    attention: Annotated[AttentionKind, typer.Option("--attention", help="lstm-attention's score.", rich_help_panel=_M)] = "luong",
    no_reverse: Annotated[bool, typer.Option("--no-reverse", help="lstm: do not reverse the source.", rich_help_panel=_M)] = False,
    vocab_size: Annotated[int, typer.Option("--vocab-size", min=8, help="Subword vocabulary size.", rich_help_panel=_M)] = 8000,
    subword: Annotated[Subword, typer.Option("--subword", help="sentencepiece model type.", rich_help_panel=_M)] = "bpe",
    separate_vocab: Annotated[bool, typer.Option("--separate-vocab", help="Separate source/target subwords (default joint).", rich_help_panel=_M)] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=16, help="Padded tokens per batch per process.", rich_help_panel=_T)] = 4096,
    epochs: Epochs = 20,
    lr: Lr = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Linear warmup steps.", rich_help_panel=_T)] = 1000,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0.0, rich_help_panel=_T)] = 0.0,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", min=0.0, max=0.99, rich_help_panel=_T)] = 0.1,
    clip: Annotated[float, typer.Option("--clip", min=0.0, help="Gradient-norm clipping (0: off).", rich_help_panel=_T)] = 1.0,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Steps between validations (0: each epoch).", rich_help_panel=_T)] = 0,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Stop after N validations without better BLEU (0: never).", rich_help_panel=_T)] = 5,
    average_last: Annotated[int, typer.Option("--average-last", min=1, help="Average the last N validated checkpoints.", rich_help_panel=_T)] = 1,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Steps between loss reports.", rich_help_panel=_T)] = 20,
    max_time: MaxTime = None,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
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
    if (src is None) != (tgt is None):
        raise UsageError("--src and --tgt go together")
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other")
    if arch != "lstm-attention" and attention != "luong":
        raise UsageError("--attention is for --arch lstm-attention")

    from dlkit.core.training import run_training
    from dlkit.tasks.translate.train import TrainConfig, train

    cfg = TrainConfig(
        src=_s(src), tgt=_s(tgt), tsv=_s(tsv), data=_s(data), pair=pair, valid_src=_s(valid_src),
        valid_tgt=_s(valid_tgt), valid_max=valid_max, out=str(out), arch=arch, preset=preset, d_model=d_model,
        layers=layers, dropout=dropout, attention=attention, reverse_source=not no_reverse, vocab_size=vocab_size,
        subword=subword, joint_vocab=not separate_vocab, max_tokens=max_tokens, epochs=epochs, lr=lr, warmup=warmup,
        weight_decay=weight_decay, label_smoothing=label_smoothing, clip=clip, eval_every=eval_every,
        patience=patience, average_last=average_last, max_time=max_time * 60 if max_time else None, seed=seed,
        save_dtype=save_dtype, resume=resume, overwrite=overwrite, log_every=log_every,
    )

    def render(result, report) -> None:
        report.event("result", model=result.model_path, steps=result.steps, best_val_bleu=result.best_bleu,
                     seconds=round(result.seconds, 1), tokens_per_s=round(result.tokens_per_s), params=result.params)
        report.info(f"best validation BLEU {result.best_bleu:.2f}; {result.steps} steps; "
                    f"{result.tokens_per_s:,.0f} target tokens/s; model: {result.model_path}")
        if not json_out:
            report.result(result.model_path)

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=render)


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


@app.command("translate")
def translate(
    text: Annotated[Optional[List[str]], typer.Argument(help="Text to translate, one output line per argument (default: stdin, line by line).")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")] = "multi30k-en-fr",
    beam: Annotated[int, typer.Option("--beam", "-b", min=1, help="Beam size (1: greedy).")] = 5,
    n_best: Annotated[int, typer.Option("--n-best", min=1, help="Print the K best translations per line with scores.")] = 1,
    length_penalty: Annotated[float, typer.Option("--length-penalty", min=0.0, help="GNMT length penalty alpha.")] = 0.6,
    max_len_ratio: Annotated[float, typer.Option("--max-len-ratio", min=0.0, help="Longest output: ratio x source subwords + 10.")] = 1.5,
    batch_size: BatchSize = 64,
    split: Annotated[bool, typer.Option("--split/--no-split", help="Split each line into sentences, translate them, join them.")] = True,
    max_line_chars: Annotated[int, typer.Option("--max-line-chars", min=1, help="Cut longer input lines (with a warning).")] = 100_000,
    ref: Annotated[Optional[Path], typer.Option("--ref", help="Reference translations (file, FIFO or <(...)): print BLEU to stderr.")] = None,
    attention_plot: Annotated[Optional[Path], typer.Option("--attention-plot", help="Write the first sentence's alignment heatmap (PNG).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Translate text: arguments or stdin, exactly one output line per input line, in order.

    Each line is split into sentences, which are translated and joined again (--no-split: whole lines).

    Reading a file, progress goes to stderr.

    Examples:

      echo "A dog is running on the grass. A cat sleeps." | dlkit translate --model multi30k-en-fr

      dlkit translate -m multi30k-en-de --beam 5 --n-best 3 "Two men are playing chess."

      dlkit translate -m multi30k-en-fr < test.en --ref test.fr > out.fr
    """
    if n_best > beam:
        raise UsageError(f"--n-best {n_best} needs --beam of at least {n_best}")
    refs = None
    if ref is not None:
        from dlkit.tasks.translate.data import read_lines

        refs = read_lines(ref)

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_stream
    from dlkit.text.lines import bounded_lines, clean_args, count_lines, cut_message, warn_once

    report = Reporter(quiet=quiet, json_mode=False)
    # auto precision: fp32 on the CPU, bf16/fp16 on a GPU
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads)
    tr = load_translator(model, rt)
    dc = DecodeConfig(beam=beam, n_best=n_best, alpha=length_penalty, max_len_ratio=max_len_ratio,
                      batch_size=batch_size, split=split, max_line_chars=max_line_chars)
    total = None
    cut_warn = warn_once(report.warn)  # one warning for every kind of cut (line read, sentence tokenised)
    if text:
        lines = clean_args(text, max_line_chars, report.warn)
    else:
        if sys.stdin.isatty():
            dc.batch_size = 1  # typing at a terminal: answer each line at once
        else:
            total = count_lines(sys.stdin.buffer)
        lines = bounded_lines(sys.stdin.buffer, max_line_chars, report.warn,
                              on_cut=lambda n: cut_warn(cut_message(n, max_line_chars)))
    hyps: list[str] = []
    results = translate_stream(tr, lines, dc, cut_warn)
    if not text and not sys.stdin.isatty():
        results = _with_progress(results, report, total, dc.batch_size)
    with closing(results):
        delivered = _write(results, hyps, json_out, n_best)
    if attention_plot is not None:
        from dlkit.tasks.translate.infer import plot_attention

        first = next((t for t in lines if t.strip()), None) if text else tr.first_source
        if first is None:
            report.warn("no non-blank input line: no attention plot written")
        else:
            report.info(f"attention plot: {plot_attention(tr, first, attention_plot)}")
    if refs is not None and delivered:  # (a closed stdout ends the command with exit 141, see core.io)
        _score(tr, hyps, refs, ref, json_out, report)


def _with_progress(results, report, total, batch_size: int):
    """Pass results through; once more than one batch of lines came (a file, not a line typed or echoed),
    show progress on stderr: a bar on a terminal (only while stdout is not one too), periodic lines otherwise."""
    if report.rich and sys.stdout.isatty():
        yield from results
        return
    from contextlib import ExitStack

    with ExitStack() as stack:
        update, done = None, 0
        for r in results:
            yield r
            done += 1
            if update is None and done > batch_size and (total is None or total > batch_size):
                update = stack.enter_context(report.progress(total, "translate"))
                update(done)
            elif update is not None:
                update(1)


def _write(results, hyps: list[str], json_out: bool, n_best: int) -> bool:
    """Print each result as it comes (one line per input line, or K for --n-best). False when the reader of
    stdout left: nothing more can be delivered, so translating stops."""
    from dlkit.core.io import results as stdout

    for r in results:
        r.pop("flush", None)
        hyps.append(r["translation"])
        if json_out:
            text = json.dumps(r, ensure_ascii=False) + "\n"
        elif n_best > 1:
            text = "".join(f"{h['score']:.4f}\t{h['translation']}\n" for h in r["n_best"]) if r["n_best"] else "\n"
        else:
            text = r["translation"] + "\n"
        if not stdout.write(text):
            return False
    return True


def _score(tr, hyps: list[str], refs: list[str], ref: Path, json_out: bool, report) -> None:
    from dlkit.core.errors import DataError
    from dlkit.text.bleu import translation_bleu

    if len(refs) != len(hyps):
        raise DataError(f"--ref '{ref}' has {len(refs):,} lines but the input had {len(hyps):,}; they must align")
    b = translation_bleu(hyps, refs, tr.pipe.tgt_lang)
    if json_out:
        from dlkit.core.io import results as stdout

        stdout.line(json.dumps({"event": "bleu", "sacrebleu": b.sacrebleu, "signature": b.signature,
                                "bleu_lc_tok": b.lc_tok, "sentences": b.sentences}))
    if not report.quiet:
        print(f"BLEU: {b.summary()}", file=sys.stderr, flush=True)
