"""`dlkit translate` and `dlkit translate-train`: thin commands over dlkit.tasks.translate (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import (BatchSize, Device, Epochs, Json, Lr, MaxTime, Models, Out, Overwrite, Precision, Quiet,
                                Resume, SaveDtype, Seed, Threads, opt)

app = typer.Typer()

_T = "Training"
_M = "Model"


@app.command("translate-train")
def translate_train(
    src: Annotated[Optional[Path], opt("--src", help="Source sentences, one per line (plain or .gz).")] = None,
    tgt: Annotated[Optional[Path], opt("--tgt", help="Target sentences aligned with --src.")] = None,
    tsv: Annotated[Optional[Path], opt("--tsv", help="Or: a TSV file of pairs (same as one --data FILE).")] = None,
    data: Annotated[Optional[List[str]], opt("--data", help="Training data PATH[:WEIGHT], repeatable: a TSV file "
                    "(plain or .gz) of 'english<TAB>other' lines, or a Multi30k-style folder (train/val.LANG[.gz]) "
                    "with --pair. WEIGHT (default 1) scales how often its pairs are seen: 2 = twice, 0.5 = half.",
                    metavar="PATH[:WEIGHT]")] = None,
    pair: Annotated[Optional[str], opt("--pair", help="Languages SRC-TGT, e.g. en-fr (Moses rules; folder files; "
                                       "xx-en reads TSV columns as 'english<TAB>xx').")] = None,
    valid_src: Annotated[Optional[Path], opt("--valid-src", help="Validation sources (default: the folders' val "
                                             "files, or English sentences held out, see --valid-sentences).")] = None,
    valid_tgt: Annotated[Optional[Path], opt("--valid-tgt", help="Validation targets aligned with --valid-src.")] = None,
    valid_tsv: Annotated[Optional[Path], opt("--valid-tsv", help="Or: validation pairs as a TSV file (e.g. a dev set).")] = None,
    valid_sentences: Annotated[int, opt("--valid-sentences", min=1, help="English sentences held out for validation "
                                        "(all their translations; at most 5% of the data).")] = 2000,
    valid_max: Annotated[int, opt("--valid-max", min=0, help="Decode at most N validation sentences for BLEU (0: all).")] = 0,
    out: Out = Path("runs/translate"),
    arch: Annotated[str, opt("--arch", choices=("lstm", "lstm-attention", "transformer"), help="Architecture.", panel=_M)] = "transformer",
    preset: Annotated[str, opt("--preset", choices=("tiny", "small", "base"), help="Model size.", panel=_M)] = "small",
    d_model: Annotated[Optional[int], opt("--d-model", min=8, help="Hidden size (default: the preset's).", panel=_M)] = None,
    layers: Annotated[Optional[int], opt("--layers", min=1, help="Encoder and decoder layers (default: the preset's).", panel=_M)] = None,
    dropout: Annotated[Optional[float], opt("--dropout", min=0.0, max=0.99, help="Dropout (default: the preset's).", panel=_M)] = None,
    attention: Annotated[str, opt("--attention", choices=("luong", "bahdanau"), help="lstm-attention's score.", panel=_M)] = "luong",
    no_reverse: Annotated[bool, opt("--no-reverse", help="lstm: do not reverse the source.", panel=_M)] = False,
    vocab_size: Annotated[int, opt("--vocab-size", min=8, help="Subword vocabulary size.", panel=_M)] = 8000,
    subword: Annotated[str, opt("--subword", choices=("bpe", "unigram"), help="sentencepiece model type.", panel=_M)] = "bpe",
    separate_vocab: Annotated[bool, opt("--separate-vocab", help="Separate source/target subwords (default joint).", panel=_M)] = False,
    max_tokens: Annotated[int, opt("--max-tokens", min=16, help="Padded tokens per batch per process.", panel=_T)] = 4096,
    epochs: Epochs = 20,
    lr: Lr = 1e-3,
    warmup: Annotated[int, opt("--warmup", min=0, help="Linear warmup steps.", panel=_T)] = 1000,
    weight_decay: Annotated[float, opt("--weight-decay", min=0.0, help="AdamW weight decay.", panel=_T)] = 0.0,
    label_smoothing: Annotated[float, opt("--label-smoothing", min=0.0, max=0.99, help="Label smoothing of the loss.", panel=_T)] = 0.1,
    clip: Annotated[float, opt("--clip", min=0.0, help="Gradient-norm clipping (0: off).", panel=_T)] = 1.0,
    eval_every: Annotated[int, opt("--eval-every", min=0, help="Steps between validations (0: each epoch).", panel=_T)] = 0,
    patience: Annotated[int, opt("--patience", min=0, help="Stop after N validations without better BLEU (0: never).", panel=_T)] = 5,
    average_last: Annotated[int, opt("--average-last", min=1, help="Average the last N validated checkpoints.", panel=_T)] = 1,
    log_every: Annotated[int, opt("--log-every", min=1, help="Steps between loss reports.", panel=_T)] = 20,
    max_time: MaxTime = None,
    init: Annotated[Optional[str], opt("--init", metavar="MODEL", help="Fine-tune this translate model (name or "
                    "path): its weights, shape and subwords; the model options above are ignored.", panel=_M)] = None,
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

    Bad TSV lines (no tab, more than one tab, an empty side, over 10,000 characters) are skipped with a warning
    naming the file and line. Validation: English sentences held out with all their translations.

    Examples:

      dlkit translate-train --data multi30k/ --pair en-fr --arch transformer --preset small --out runs/en-fr

      dlkit translate-train --pair en-fr --data tatoeba.en-fr.tsv.gz --data news.en-fr.tsv.gz:2 --data multi30k/:0.5

      dlkit translate-train --src train.en --tgt train.de --arch lstm-attention --epochs 10

      dlkit translate-train --pair en-fr --init en-fr --data my-pairs.tsv --lr 3e-4 --warmup 100 --out runs/mine

      torchrun --nproc_per_node=2 -m dlkit translate-train --tsv pairs.tsv --pair en-de --out runs/ddp
    """
    if (src is None) != (tgt is None):
        raise UsageError("--src and --tgt go together")
    if arch != "lstm-attention" and attention != "luong":
        raise UsageError("--attention is for --arch lstm-attention")

    from dlkit.core.training import run_training
    from dlkit.tasks.translate.train import TrainConfig, train

    cfg = TrainConfig(
        src=_s(src), tgt=_s(tgt), tsv=_s(tsv), data=list(data or []), pair=pair, valid_src=_s(valid_src),
        valid_tgt=_s(valid_tgt), valid_tsv=_s(valid_tsv), valid_sentences=valid_sentences, valid_max=valid_max, out=str(out), arch=arch, preset=preset, d_model=d_model,
        layers=layers, dropout=dropout, attention=attention, reverse_source=not no_reverse, vocab_size=vocab_size,
        subword=subword, joint_vocab=not separate_vocab, max_tokens=max_tokens, epochs=epochs, lr=lr, warmup=warmup,
        weight_decay=weight_decay, label_smoothing=label_smoothing, clip=clip, eval_every=eval_every,
        patience=patience, average_last=average_last, max_time=max_time, seed=seed,
        save_dtype=save_dtype, resume=resume, overwrite=overwrite, log_every=log_every, init=init,
    )

    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=_trained)


def _trained(result, report) -> None:
    report.trained(result.model_path, f"best validation BLEU {result.best_bleu:.2f}; {result.steps} steps; "
                   f"{result.tokens_per_s:,.0f} target tokens/s", steps=result.steps, best_val_bleu=result.best_bleu,
                   seconds=round(result.seconds, 1), tokens_per_s=round(result.tokens_per_s), params=result.params)


def _s(p: Optional[Path]) -> Optional[str]:
    return str(p) if p is not None else None


@app.command("translate")
def translate(
    text: Annotated[Optional[List[str]], typer.Argument(help="Text to translate, one output line per argument (default: stdin, line by line).")] = None,
    model: Models = None,
    to: Annotated[Optional[str], opt("--to", help="Target language of the bundled English model: fr (default) or de. "
                                     "Picks en-fr/en-de, or multi30k-en-fr/multi30k-en-de where those are not "
                                     "installed.")] = None,
    eval_tsv: Annotated[Optional[Path], opt("--eval", help="Score on a test TSV ('english<TAB>other'): a table of "
                                            "sacreBLEU (with signature) and chrF; repeat --model to compare models.")] = None,
    beam: Annotated[int, opt("--beam", "-b", min=1, help="Beam size (1: greedy).")] = 5,
    n_best: Annotated[int, opt("--n-best", min=1, help="Print the K best translations per line with scores.")] = 1,
    length_penalty: Annotated[float, opt("--length-penalty", min=0.0, help="GNMT length penalty alpha.")] = 0.6,
    max_len_ratio: Annotated[float, opt("--max-len-ratio", min=0.0, help="Longest output: ratio x source subwords + 10.")] = 1.5,
    batch_size: BatchSize = 64,
    split: Annotated[bool, opt("--split/--no-split", help="Split each line into sentences, translate them, join them.")] = True,
    max_line_chars: Annotated[int, opt("--max-line-chars", min=1, help="Cut longer input lines (with a warning).")] = 100_000,
    ref: Annotated[Optional[Path], opt("--ref", help="Reference translations (file, FIFO or <(...)): print BLEU to stderr.")] = None,
    attention_plot: Annotated[Optional[Path], opt("--attention-plot", help="Write the first sentence's alignment heatmap (PNG).")] = None,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Translate text: arguments or stdin, exactly one output line per input line, in order.

    English -> French by default (--to de: German) with the general bundled model en-fr (en-de); where it is
    not installed, the Multi30k model (multi30k-en-fr, multi30k-en-de: image descriptions) is used instead.

    Each line is split into sentences, which are translated and joined again (--no-split: whole lines).

    Reading a file, progress goes to stderr.

    Examples:

      echo "A dog is running on the grass. A cat sleeps." | dlkit translate --model multi30k-en-fr

      dlkit translate -m multi30k-en-de --beam 5 --n-best 3 "Two men are playing chess."

      dlkit translate -m multi30k-en-fr < test.en --ref test.fr > out.fr

      echo "Where is the train station?" | dlkit translate --to de

      dlkit translate --eval newstest2013.en-fr.tsv.gz -m en-fr -m multi30k-en-fr
    """
    from dlkit.core.io import results
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.translate.infer import DecodeConfig
    from dlkit.tasks.translate.jobs import TranslateJob, translate_job

    models = list(model or [])
    if eval_tsv is not None and (text or ref or attention_plot or n_best > 1):
        raise UsageError("--eval reads its sentences from the TSV: no TEXT, --ref, --attention-plot or --n-best with it")
    if eval_tsv is None and len(models) > 1:
        raise UsageError("give one --model (several only with --eval, to compare them)")
    dc = DecodeConfig(beam=beam, n_best=n_best, alpha=length_penalty, max_len_ratio=max_len_ratio,
                      batch_size=batch_size, split=split, max_line_chars=max_line_chars)
    job = TranslateJob(model=models[0] if models else None, decode=dc, texts=list(text) if text else None,
                       ref=_s(ref), attention_plot=_s(attention_plot), to=to)
    report = Reporter(quiet=quiet, json_mode=False)
    # auto: bf16/fp16 on a GPU; on a CPU what benchmarks/cpu_speed.py measured faster for "translate"
    rt = make_runtime(device, precision, 0, distributed=False, threads=threads, family="translate")
    if eval_tsv is not None:
        from dlkit.tasks.translate.scoring import evaluate_models

        res = evaluate_models(str(eval_tsv), models or [job.model], dc, rt, report)
        results.line(json.dumps(res.to_json()) if json_out else res.table())
        return
    done = translate_job(job, rt, report, emit=lambda r: results.write(_line(r, json_out, n_best)))
    if done.attention_plot is not None:
        report.info(f"attention plot: {done.attention_plot}")
    if done.bleu is not None:
        if json_out:
            b = done.bleu
            results.line(json.dumps({"event": "bleu", "sacrebleu": b.sacrebleu, "signature": b.signature,
                                     "bleu_lc_tok": b.lc_tok, "sentences": b.sentences}))
        report.info(f"BLEU: {done.bleu.summary()}")


def _line(r: dict, json_out: bool, n_best: int) -> str:
    """One result as printed: one line per input line, or K for --n-best, or a JSON object."""
    if json_out:
        return json.dumps(r, ensure_ascii=False) + "\n"
    if n_best > 1:
        return "".join(f"{h['score']:.4f}\t{h['translation']}\n" for h in r["n_best"]) if r["n_best"] else "\n"
    return r["translation"] + "\n"
