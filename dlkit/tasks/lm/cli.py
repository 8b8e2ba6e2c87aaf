"""`dlkit lm-train` and `dlkit lm-sample`: thin commands over dlkit.tasks.lm (no torch at import)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import (Device, Json, Lr, MaxTime, Model, Out, Overwrite, Precision, Quiet, Resume, SaveDtype,
                                Seed, Threads, opt)

app = typer.Typer()

# the names of dlkit.tasks.lm.model.PRESETS (a test checks they agree; this module must not import torch)
PRESETS = ("tiny", "small", "medium", "large")
RENAMED_PRESETS = {"baby": "large"}  # earlier names, still accepted


@app.command("lm-train")
def lm_train(
    data: Annotated[Path, opt("--data", help="UTF-8 text file or folder of text files (a FIFO or <(...) works).")],
    out: Out = Path("runs/lm"),
    preset: Annotated[str, opt("--preset", choices=PRESETS, renamed=RENAMED_PRESETS, help="Model size.")] = "small",
    tokenizer: Annotated[str, opt("--tokenizer", choices=("char", "bpe"), help="char (small corpora) or bpe "
                                  "(byte-level BPE).")] = "char",
    vocab_size: Annotated[int, opt("--vocab-size", min=257, max=65535, help="BPE vocabulary size.")] = 4096,
    val: Annotated[Optional[Path], opt("--val", help="Validation text (default: last --val-fraction of --data).")] = None,
    val_fraction: Annotated[float, opt("--val-fraction", min=0.001, max=0.9, help="Share of the data held out for validation.")] = 0.1,
    block_size: Annotated[Optional[int], opt("--block-size", min=1, max=65536, help="Context length (default: the preset's).")] = None,
    dropout: Annotated[Optional[float], opt("--dropout", min=0.0, max=0.9, help="Dropout (default: the preset's).")] = None,
    batch_size: Annotated[int, opt("--batch-size", min=1, help="Sequences per step per process.")] = 12,
    grad_accum: Annotated[int, opt("--grad-accum", min=1, help="Micro-batches per optimizer step.")] = 1,
    steps: Annotated[int, opt("--steps", min=1, help="Optimizer steps.")] = 2000,
    lr: Lr = 1e-3,
    min_lr: Annotated[float, opt("--min-lr", min=0.0, help="Learning rate at the end of the cosine.")] = 1e-4,
    warmup: Annotated[int, opt("--warmup", min=0, help="Linear warmup steps.")] = 100,
    weight_decay: Annotated[float, opt("--weight-decay", min=0.0, help="AdamW weight decay (matrices only).")] = 0.1,
    clip: Annotated[float, opt("--clip", min=0.0, help="Gradient-norm clipping (0: off).")] = 1.0,
    eval_every: Annotated[int, opt("--eval-every", min=1, help="Evaluate (and save the best model) every N steps.")] = 250,
    eval_iters: Annotated[int, opt("--eval-iters", min=1, help="Batches per evaluation estimate.")] = 50,
    log_every: Annotated[int, opt("--log-every", min=1, help="Read and report the training loss every N steps.")] = 10,
    sample_tokens: Annotated[int, opt("--sample-tokens", min=0, help="Tokens sampled at each evaluation (0: none).")] = 200,
    max_time: MaxTime = None,
    compile: Annotated[bool, opt("--compile", help="torch.compile the model (GPUs; on a CPU measured no faster than eager).")] = False,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    seed: Seed = 1337,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a GPT language model on a text corpus.

    The best model (by validation loss) is written to OUT/model.safetensors; OUT/model.state.pt lets
    --resume continue exactly. An --out that already holds a run needs --resume or --overwrite.
    Ctrl-C saves the state and exits with code 130; a closed stdout (| head) saves it and exits 141.

    Examples:

      dlkit lm-train --data input.txt --preset small --steps 2000 --out runs/shakespeare

      dlkit lm-train --data corpus/ --tokenizer bpe --vocab-size 8192 --preset large --max-time 60

      torchrun --nproc_per_node=4 -m dlkit lm-train --data input.txt --preset large --out runs/ddp
    """
    from dlkit.core.io import text_files
    from dlkit.core.rundir import check_run_dir

    text_files(data)  # fail on bad data and a taken --out before torch is even imported
    if val is not None:
        text_files(val)
    check_run_dir(out, resume, overwrite)

    from dlkit.core.threads import spin_when_idle

    os.environ.update(spin_when_idle(os.environ, threads))  # before torch loads; the loop watches (BusyWatch)
    import dlkit.core.runtime  # noqa: F401 - first: torch then loads with the GC paused (why: core/runtime.py)
    from dlkit.core.training import run_training
    from dlkit.tasks.lm.train import TrainConfig, train

    cfg = TrainConfig(
        data=str(data), out=str(out), preset=preset, block_size=block_size, dropout=dropout, tokenizer=tokenizer,
        vocab_size=vocab_size, val=str(val) if val else None, val_fraction=val_fraction, batch_size=batch_size,
        grad_accum=grad_accum, steps=steps, lr=lr, min_lr=min_lr, warmup=warmup, weight_decay=weight_decay, clip=clip,
        eval_every=eval_every, eval_iters=eval_iters, log_every=log_every, sample_tokens=sample_tokens,
        max_time=max_time, compile=compile, seed=seed, save_dtype=save_dtype, resume=resume,
    )
    # --precision auto on a CPU: what benchmarks/cpu_speed.py and lm_bench.py measured per preset (core/runtime.py)
    family = f"lm-{RENAMED_PRESETS.get(preset, preset)}"
    run_training(train, cfg, out=out, resume=resume, overwrite=overwrite, device=device, precision=precision,
                 seed=seed, threads=threads, json_out=json_out, quiet=quiet, render=_trained, family=family)


def _trained(result, report) -> None:
    report.trained(result.model_path, f"best val loss {result.best_val_loss:.4f}; {result.tokens_per_s:,.0f} tokens/s",
                   steps=result.steps, best_val_loss=result.best_val_loss, seconds=result.seconds,
                   tokens_per_s=result.tokens_per_s)


@app.command("lm-sample")
def lm_sample(
    model: Model = "shakespeare-char",
    prompt: Annotated[str, opt("--prompt", "-p", help="Text to continue; '-' reads it from stdin.")] = "",
    max_new_tokens: Annotated[int, opt("--max-new-tokens", "-n", min=0, help="Tokens to generate per sample.")] = 500,
    temperature: Annotated[float, opt("--temperature", "-t", min=0.0, help="Softmax temperature (0: greedy).")] = 0.8,
    top_k: Annotated[Optional[int], opt("--top-k", min=1, help="Sample among the k most likely tokens.")] = 200,
    top_p: Annotated[Optional[float], opt("--top-p", min=1e-6, max=1.0, help="Nucleus sampling mass in (0, 1].")] = None,
    num_samples: Annotated[int, opt("--num-samples", min=1, help="Independent samples to draw.")] = 1,
    no_cache: Annotated[bool, opt("--no-cache", help="Recompute the whole context per token (slow; for comparison).")] = False,
    device: Device = "auto",
    precision: Precision = "auto",
    threads: Threads = None,
    seed: Annotated[Optional[int], opt("--seed", help="Random seed (default: a fresh one, shown with --json).",
                                       panel="Runtime")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Generate text from a language model, streaming tokens to stdout as they come.

    Each run samples afresh unless --seed is given (the same seed gives the same text on a CPU).

    Examples:

      dlkit lm-sample --model shakespeare-char --prompt 'ROMEO:' --max-new-tokens 300

      echo 'To be, or not' | dlkit lm-sample --prompt - --temperature 0.7 --top-p 0.9 --num-samples 3
    """
    if prompt == "-":
        prompt = sys.stdin.buffer.read().decode("utf-8", errors="replace").rstrip("\n")
    if seed is None:
        import secrets

        seed = secrets.randbelow(2**31)

    from dlkit.core.io import results
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.lm.infer import SampleConfig, stream_samples

    cfg = SampleConfig(model=model, prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, num_samples=num_samples, seed=seed, use_cache=not no_cache)
    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed, distributed=False, threads=threads)
    for s in stream_samples(cfg, rt, on_text=None if json_out else results.write):
        if json_out:
            if not report.result(json.dumps(s)):
                break
        else:
            report.info(f"[{s['new_tokens']} tokens, {s['tokens_per_s']:.0f} tokens/s, seed {seed}]")
