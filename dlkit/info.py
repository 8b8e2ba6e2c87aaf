"""`dlkit doctor` and `dlkit models`: what this machine and this install can do."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.options import Json, Overwrite, Quiet, Threads, opt

app = typer.Typer()
models_app = typer.Typer(help="List bundled models and models under $DLKIT_HOME/models.", invoke_without_command=True)
app.add_typer(models_app, name="models")


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.1f} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
        n /= 1000
    return str(n)


CPU_WHEEL = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"


def cpu_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): there ``--precision bf16`` pays off."""
    from dlkit.core.runtime import cpu_bf16 as native

    return native()


def doctor_report() -> dict:
    import torch
    import torchvision

    from dlkit import __version__
    from dlkit.core.zoo import list_models

    cuda = torch.cuda.is_available()
    gpus = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    cpu16 = cpu_bf16()
    rows = list_models()
    warnings = [f"skipping a model file: {m['error']}" for m in rows if "error" in m]
    if torch.version.cuda and not cuda:
        warnings.append(f"torch {torch.__version__} is a CUDA build but no CUDA GPU is usable here: the CPU wheel is "
                        f"much smaller: {CPU_WHEEL}")
    return {
        "dlkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpus": gpus,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()) or cpu16,
        "cpu_bf16": cpu16,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mps_available": mps,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dlkit_home": str(__import__("dlkit.core.zoo", fromlist=["home_dir"]).home_dir()),
        "models": [m["name"] for m in rows if "error" not in m],
        "warnings": warnings,
    }


@app.command()
def doctor(json_out: Json = False, threads: Threads = None) -> None:
    """Show versions, accelerators and the models dlkit can find.

    --threads shows the thread count a command given the same --threads would use.

    Example: dlkit doctor --json
    """
    if threads is not None:
        from dlkit.core.runtime import set_threads

        set_threads(threads)
    r = doctor_report()
    for w in r["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    if json_out:
        typer.echo(json.dumps(r))
        return
    lines = [
        f"dlkit        {r['dlkit']}",
        f"python       {r['python']} ({r['platform']})",
        f"torch        {r['torch']}   torchvision {r['torchvision']}",
        f"CUDA         {'yes, ' + str(r['cuda_version']) if r['cuda_available'] else 'no'}",
    ]
    for g in r["gpus"]:
        lines.append(f"  GPU {g['index']}      {g['name']}, {g['memory_gb']} GiB, sm {g['capability']}")
    lines += [
        f"bf16         {_bf16_line(r)}",
        f"MPS          {'yes' if r['mps_available'] else 'no'}",
        f"threads      {r['threads']} (of {r['cpu_count']} CPUs)",
        f"DLKIT_HOME   {r['dlkit_home']}",
        f"models       {', '.join(r['models']) or 'none found'}",
    ]
    typer.echo("\n".join(lines))


def _bf16_line(r: dict) -> str:
    if r["cpu_bf16"]:
        gpu = " and on the GPU" if r["cuda_available"] and r["bf16_supported"] else ""
        return (f"yes on this CPU (AVX512-BF16/AMX{gpu}): --precision auto trains the convnets and the large GPT in "
                "bf16 (measured faster, same quality)")
    if r["bf16_supported"]:
        return "yes (GPU)"
    return "no (CPU runs fp32 by default)"


@models_app.callback()
def models(ctx: typer.Context, json_out: Json = False) -> None:
    """List bundled models and models under $DLKIT_HOME/models.

    Examples: dlkit models; dlkit models --json; dlkit models show shakespeare-char
    """
    if ctx.invoked_subcommand is not None:
        return
    from dlkit.core.zoo import list_models

    rows = list_models()
    for m in rows:
        if "error" in m:  # one broken file must not hide the others
            typer.echo(f"warning: skipping a model file: {m['error']}", err=True)
    rows = [m for m in rows if "error" not in m]
    if json_out:
        for m in rows:  # JSON Lines: one model per line
            typer.echo(json.dumps(m))
        return
    if not rows:
        typer.echo("no models found", err=True)
        return
    w = max([22] + [len(m["name"]) for m in rows])  # the name column fits the longest name
    header = f"{'name':<{w}} {'task':<10} {'params':>8} {'size':>9}  {'data':<28} metric"
    typer.echo(header)
    for m in rows:
        typer.echo(
            f"{m['name']:<{w}} {m['task'] or '?':<10} {_human(m['parameters'], ''):>8} {_human(m['size_bytes']):>9}  "
            f"{_clip(str(m['data'] or '-'), 28):<28} {m['metric'] or '-'}"
        )


def _clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: cut at the last word boundary that fits, marked with "..."."""
    if len(text) <= width:
        return text
    cut = text[:width - 3]
    if text[width - 3] != " " and " " in cut[width // 2:]:  # cut at a word boundary in the second half
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:(") + "..."


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="Model NAME or path.")], json_out: Json = False) -> None:
    """Print a model's card (or its metadata with --json).

    Example: dlkit models show shakespeare-char
    """
    from dlkit.core.modelfile import read_meta
    from dlkit.core.zoo import card_path, resolve_model

    path = resolve_model(name)
    meta = read_meta(path)
    if json_out:
        typer.echo(json.dumps(meta))
        return
    card = card_path(path)
    if card.exists():
        sys.stdout.write(card.read_text(encoding="utf-8"))
        return
    typer.echo(f"(no model card beside {path}; its metadata follows)", err=True)
    typer.echo(json.dumps({k: v for k, v in meta.items() if k not in ("vocab", "tokenizer")}, indent=2))


@models_app.command("average")
def models_average(
    models: Annotated[list[str], typer.Argument(help="Two or more model NAMEs or paths of one architecture.",
                                                show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The averaged model file to write (.safetensors).",
                                      rich_help_panel="Output")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Comma-separated weight per model "
                                                   "(default: equal).", show_default=False)] = None,
    save_dtype: Annotated[Optional[str], opt("--save-dtype", choices=("fp32", "fp16", "int8"), panel="Output",
                                             help="Weights' type in the file written (default: as the first model "
                                                  "is stored).")] = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Average the weights of several model files of one network (checkpoint averaging).

    Snapshots of one run, e.g. a GAN generator after each --resume segment, or a translation model's last
    checkpoints, averaged tensor by tensor. The files must describe the same network (task, config, vocabulary,
    tensors); the result has the last file's metadata, the inputs listed under "averaged" and no metrics: score it
    again. BatchNorm running statistics are averaged as well, which only approximates the averaged weights' own.

    Examples:

      dlkit models average runs/gan/snap1.safetensors runs/gan/snap2.safetensors -o gan-avg.safetensors

      dlkit models average a.safetensors b.safetensors --weights 1,3 -o soup.safetensors
    """
    from dlkit.core.average import average_files, has_batchnorm_statistics
    from dlkit.core.errors import UsageError
    from dlkit.core.io import guard_output
    from dlkit.core.modelfile import save_model
    from dlkit.core.zoo import resolve_model

    if not str(out).endswith(".safetensors"):
        raise UsageError(f"--out must name a .safetensors file, not '{out}'")
    w = None
    if weights is not None:
        try:
            w = [float(x) for x in weights.split(",")]
        except ValueError:
            raise UsageError(f"--weights must be numbers separated by commas, not '{weights}'") from None
    paths = [resolve_model(m) for m in models]
    guard_output(out, inputs=paths, overwrite=overwrite)
    state, meta, dtype = average_files(paths, w)
    if has_batchnorm_statistics(state) and not quiet:
        typer.echo("note: BatchNorm running statistics were averaged too; they approximate the averaged weights' "
                   "own (re-estimate them where the task offers it)", err=True)
    save_model(out, state, meta, dtype=save_dtype or dtype)
    row = {"out": str(out), "task": meta.get("task"), "models": [str(p) for p in paths],
           "weights": [a["weight"] for a in meta["averaged"]], "save_dtype": save_dtype or dtype}
    if json_out:
        typer.echo(json.dumps(row))
    else:
        typer.echo(f"{out}: average of {len(paths)} {meta.get('task')} models ({row['save_dtype']})")
