"""`dlkit lm-train` and `dlkit lm-sample`: thin commands over dlkit.tasks.lm (no torch at import)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import Device, Json, MaxTime, Out, Precision, Quiet, Resume, SaveDtype, Seed

app = typer.Typer()


@app.command("lm-train")
def lm_train(
    data: Annotated[Path, typer.Option("--data", help="UTF-8 text file or folder of text files.")],
    out: Out = Path("runs/lm"),
    preset: Annotated[str, typer.Option("--preset", help="Model size: tiny | small | medium | baby.")] = "small",
    tokenizer: Annotated[str, typer.Option("--tokenizer", help="char (small corpora) or bpe (byte-level BPE).")] = "char",
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="BPE vocabulary size.")] = 4096,
    val: Annotated[Optional[Path], typer.Option("--val", help="Validation text (default: last --val-fraction of --data).")] = None,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of the data held out for validation.")] = 0.1,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="Context length (default: the preset's).")] = None,
    dropout: Annotated[Optional[float], typer.Option("--dropout", help="Dropout (default: the preset's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Sequences per step per process.")] = 12,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Micro-batches per optimizer step.")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 2000,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-3,
    min_lr: Annotated[float, typer.Option("--min-lr", help="Learning rate at the end of the cosine.")] = 1e-4,
    warmup: Annotated[int, typer.Option("--warmup", help="Linear warmup steps.")] = 100,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.1,
    clip: Annotated[float, typer.Option("--clip", help="Gradient-norm clipping (0: off).")] = 1.0,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Evaluate (and save the best model) every N steps.")] = 250,
    eval_iters: Annotated[int, typer.Option("--eval-iters", help="Batches per evaluation estimate.")] = 50,
    sample_tokens: Annotated[int, typer.Option("--sample-tokens", help="Tokens sampled at each evaluation (0: none).")] = 200,
    max_time: MaxTime = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU).")] = False,
    save_dtype: SaveDtype = "fp32",
    resume: Resume = False,
    device: Device = "auto",
    precision: Precision = "auto",
    seed: Seed = 1337,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train a GPT language model on a text corpus.

    The best model (by validation loss) is written to OUT/model.safetensors; OUT/model.state.pt lets
    --resume continue exactly. Ctrl-C saves the state and exits with code 130.

    Examples:

      dlkit lm-train --data input.txt --preset small --steps 2000 --out runs/shakespeare

      dlkit lm-train --data corpus/ --tokenizer bpe --vocab-size 8192 --preset baby --max-time 60

      torchrun --nproc_per_node=4 -m dlkit lm-train --data input.txt --preset baby --out runs/ddp
    """
    for name, value in (("--steps", steps), ("--batch-size", batch_size), ("--grad-accum", grad_accum),
                        ("--eval-every", eval_every), ("--eval-iters", eval_iters)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1 (got {value})")
    if not 0 < val_fraction < 1:
        raise UsageError(f"--val-fraction must be between 0 and 1 (got {val_fraction})")
    if save_dtype not in ("fp32", "fp16"):
        raise UsageError(f"--save-dtype must be fp32 or fp16 (got {save_dtype})")
    if lr <= 0:
        raise UsageError(f"--lr must be positive (got {lr})")

    from dlkit.core.checkpoint import check_writable_dir
    from dlkit.core.interrupt import StopSignal, catch_signals
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime, shutdown
    from dlkit.core.io import text_files
    from dlkit.tasks.lm.train import TrainConfig, train

    text_files(data)  # fail on bad data before anything else
    if val is not None:
        text_files(val)
    check_writable_dir(out)
    cfg = TrainConfig(
        data=str(data), out=str(out), preset=preset, block_size=block_size, dropout=dropout, tokenizer=tokenizer,
        vocab_size=vocab_size, val=str(val) if val else None, val_fraction=val_fraction, batch_size=batch_size,
        grad_accum=grad_accum, steps=steps, lr=lr, min_lr=min_lr, warmup=warmup, weight_decay=weight_decay,
        clip=clip, eval_every=eval_every, eval_iters=eval_iters, sample_tokens=sample_tokens,
        max_time=max_time * 60 if max_time else None, compile=compile, seed=seed, save_dtype=save_dtype, resume=resume,
    )
    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, precision, seed)
    try:
        with catch_signals(StopSignal()) as stop:
            result = train(cfg, rt, report, stop)
    finally:
        shutdown(rt)
    report.event("result", model=result.model_path, steps=result.steps, best_val_loss=result.best_val_loss,
                 seconds=result.seconds, tokens_per_s=result.tokens_per_s)
    report.info(f"best val loss {result.best_val_loss:.4f}; {result.tokens_per_s:,.0f} tokens/s; "
                f"model: {result.model_path}")
    if not json_out and rt.is_main:
        typer.echo(result.model_path)


@app.command("lm-sample")
def lm_sample(
    model: Annotated[str, typer.Option("--model", "-m", help="Bundled model NAME or path to a .safetensors file.")] = "shakespeare-char",
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue; '-' reads it from stdin.")] = "",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-n", help="Tokens to generate per sample.")] = 500,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Softmax temperature (> 0).")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Sample among the k most likely tokens.")] = 200,
    top_p: Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling mass in (0, 1].")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Independent samples to draw.")] = 1,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the whole context per token (slow; for comparison).")] = False,
    device: Device = "auto",
    seed: Seed = 1337,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Generate text from a language model, streaming tokens to stdout as they come.

    Examples:

      dlkit lm-sample --model shakespeare-char --prompt 'ROMEO:' --max-new-tokens 300

      echo 'To be, or not' | dlkit lm-sample --prompt - --temperature 0.7 --top-p 0.9 --num-samples 3
    """
    if temperature <= 0:
        raise UsageError(f"--temperature must be greater than 0 (got {temperature})")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1 (got {top_k})")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1] (got {top_p})")
    if max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must not be negative (got {max_new_tokens})")
    if num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1 (got {num_samples})")
    if prompt == "-":
        prompt = sys.stdin.buffer.read().decode("utf-8", errors="replace").rstrip("\n")

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.core.zoo import resolve_model
    from dlkit.tasks.lm.infer import stream_samples

    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, "fp32", seed, distributed=False)
    path = resolve_model(model, "lm")
    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    for s in stream_samples(path, prompt, max_new_tokens, temperature, top_k, top_p, num_samples, rt.device, seed,
                            use_cache=not no_cache, on_text=None if json_out else write):
        if json_out:
            typer.echo(json.dumps(s))
        else:
            report.info(f"[{s['new_tokens']} tokens, {s['tokens_per_s']:.0f} tokens/s]")
