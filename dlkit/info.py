"""`dlkit doctor` and `dlkit models`: what this machine and this install can do."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Annotated

import typer

from dlkit.core.options import Json

app = typer.Typer()
models_app = typer.Typer(help="List bundled models and models under $DLKIT_HOME/models.", invoke_without_command=True)
app.add_typer(models_app, name="models")


def _human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.1f} {prefix}{unit}" if prefix else f"{n:.0f} {unit}"
        n /= 1000
    return str(n)


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
    return {
        "dlkit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "gpus": gpus,
        "bf16_supported": bool(cuda and torch.cuda.is_bf16_supported()),
        "mps_available": mps,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "dlkit_home": str(__import__("dlkit.core.zoo", fromlist=["home_dir"]).home_dir()),
        "models": [m["name"] for m in list_models() if "error" not in m],
    }


@app.command()
def doctor(json_out: Json = False) -> None:
    """Show versions, accelerators and the models dlkit can find.

    Example: dlkit doctor --json
    """
    r = doctor_report()
    if json_out:
        typer.echo(json.dumps(r, indent=2))
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
        f"bf16         {'yes' if r['bf16_supported'] else 'no (CPU runs fp32 by default)'}",
        f"MPS          {'yes' if r['mps_available'] else 'no'}",
        f"threads      {r['threads']} (of {r['cpu_count']} CPUs)",
        f"DLKIT_HOME   {r['dlkit_home']}",
        f"models       {', '.join(r['models']) or 'none found'}",
    ]
    typer.echo("\n".join(lines))


@models_app.callback()
def models(ctx: typer.Context, json_out: Json = False) -> None:
    """List bundled models and models under $DLKIT_HOME/models.

    Examples: dlkit models; dlkit models --json; dlkit models show shakespeare-char
    """
    if ctx.invoked_subcommand is not None:
        return
    from dlkit.core.zoo import list_models

    rows = list_models()
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no models found", err=True)
        return
    header = f"{'name':<22} {'task':<10} {'params':>8} {'size':>9}  {'data':<28} metric"
    typer.echo(header)
    for m in rows:
        if "error" in m:
            typer.echo(f"{m['name']:<22} unreadable: {m['error']}")
            continue
        typer.echo(
            f"{m['name']:<22} {m['task'] or '?':<10} {_human(m['parameters'], ''):>8} {_human(m['size_bytes']):>9}  "
            f"{str(m['data'] or '-')[:28]:<28} {m['metric'] or '-'}"
        )


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument(help="Model NAME or path.")], json_out: Json = False) -> None:
    """Print a model's card (or its metadata with --json).

    Example: dlkit models show shakespeare-char
    """
    from dlkit.core.checkpoint import read_meta
    from dlkit.core.zoo import card_path, resolve_model

    path = resolve_model(name)
    meta = read_meta(path)
    if json_out:
        typer.echo(json.dumps(meta, indent=2))
        return
    card = card_path(path)
    if card.exists():
        sys.stdout.write(card.read_text(encoding="utf-8"))
        return
    typer.echo(f"(no model card beside {path}; its metadata follows)", err=True)
    typer.echo(json.dumps({k: v for k, v in meta.items() if k not in ("vocab", "tokenizer")}, indent=2))
