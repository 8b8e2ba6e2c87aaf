"""`dlkit adv-attack`: a thin command over dlkit.tasks.adversarial (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import opt as _opt, Device, Json, Overwrite, Precision, Quiet, Seed, Threads
from dlkit.tasks.adversarial.spec import MINIMAL, METHODS, TARGETED, eps_label, parse_eps, parse_eps_list, \
    parse_methods, parse_transforms

app = typer.Typer()

DEFAULT_MODELS = {"mnist": "mnist-cnn", "cifar10": "cifar10-resnet"}
IMAGENET = "imagenet-efficientnet-lite0"
_ATTACK = "Attack"
_DATA = "Dataset mode"



@app.command("adv-attack")
def adv_attack(
    image: Annotated[Optional[Path], typer.Argument(help="The image to attack (or use --dataset / --data).",
                                                    show_default=False)] = None,
    model: Annotated[Optional[str], _opt("--model", "-m", help="Classifier: a bundled name (mnist-cnn, cifar10-resnet), "
                     f"a classifier .safetensors file, {IMAGENET}, or torchvision:NAME with local weights. Default: "
                     f"{IMAGENET} for an image, the dataset's bundled model for a dataset.")] = None,
    method: Annotated[str, _opt("--method", help=f"Attack(s), comma-separated: {', '.join(METHODS)}.", panel=_ATTACK)] = "fgsm",
    eps: Annotated[Optional[str], _opt("--eps", help="Budget: 8 (pixel levels of 255), 8/255 or 0.03; a comma list in "
                   "dataset mode. pgd-l2: the L2 radius. deepfool/cw search freely; eps clips them. Default: 8 "
                   "(dataset mode: 0,2,4,8,16).", panel=_ATTACK)] = None,
    target: Annotated[Optional[str], _opt("--target", help="Targeted attack: class name (gibbon) or index.", panel=_ATTACK)] = None,
    steps: Annotated[Optional[int], _opt("--steps", min=1, help="Iterations (default: the method's; bim/ill: Kurakin's "
                     "min(eps+4, 1.25 eps), pgd/mifgsm 10, deepfool 50, cw 100).", panel=_ATTACK)] = None,
    step_size: Annotated[Optional[str], _opt("--step-size", help="Step per iteration, in eps units (2/255) (default: "
                         "bim/ill 1/255, pgd 2.5 eps/steps, mifgsm eps/steps).", panel=_ATTACK)] = None,
    restarts: Annotated[int, _opt("--restarts", min=1, help="pgd: random restarts; the first success is kept.", panel=_ATTACK)] = 1,
    random_start: Annotated[bool, _opt("--random-start/--no-random-start", help="pgd: start at a random point of the eps ball.",
                                       panel=_ATTACK)] = True,
    decay: Annotated[float, _opt("--decay", min=0.0, help="mifgsm: momentum decay.", panel=_ATTACK)] = 1.0,
    overshoot: Annotated[float, _opt("--overshoot", min=0.0, help="deepfool: overshoot.", panel=_ATTACK)] = 0.02,
    cw_c: Annotated[float, _opt("--cw-c", min=0.0, help="cw: weight of the misclassification term.", panel=_ATTACK)] = 1.0,
    cw_kappa: Annotated[float, _opt("--cw-kappa", min=0.0, help="cw: confidence margin.", panel=_ATTACK)] = 0.0,
    cw_lr: Annotated[float, _opt("--cw-lr", min=1e-9, help="cw: Adam learning rate.", panel=_ATTACK)] = 0.01,
    cw_search: Annotated[int, _opt("--cw-search", min=1, help="cw: binary-search steps over c (1: fixed c).", panel=_ATTACK)] = 1,
    top_k: Annotated[int, _opt("--top-k", min=1, max=20, help="Predictions shown before and after.")] = 5,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Write the adversarial image here (PNG keeps it exactly).")] = None,
    figure: Annotated[Optional[Path], _opt("--figure", help="Write the lecture's figure x + eps sign(grad) = x_adv (PNG).")] = None,
    transform: Annotated[Optional[str], _opt("--transform", help="Re-classify after jpeg:75,resize:0.5,blur:1,noise:2 "
                         "(Kurakin et al.'s physical-world check: does the attack survive?).")] = None,
    dataset: Annotated[Optional[str], _opt("--dataset", help="mnist | cifar10 (test split from --data), or omit with an image "
                       "folder as --data.", panel=_DATA)] = None,
    data: Annotated[Optional[Path], _opt("--data", help="mnist.npz, cifar10_jpeg.npz, or an image folder (<class>/<image>, "
                    "or test/<class>/<image>).", panel=_DATA)] = None,
    limit: Annotated[Optional[int], _opt("--limit", min=1, help="Attack the first N test examples.", panel=_DATA)] = None,
    per_class: Annotated[Optional[int], _opt("--per-class", min=1, help="Attack the first N test examples of each class "
                         "(for files sorted by class, such as cifar10_jpeg.npz).", panel=_DATA)] = None,
    batch_size: Annotated[int, _opt("--batch-size", min=1, help="Images per attack batch on the device.", panel=_DATA)] = 128,
    plot: Annotated[Optional[Path], _opt("--plot", help="Write accuracy against eps as a PNG.", panel=_DATA)] = None,
    save_adv: Annotated[Optional[Path], _opt("--save-adv", help="Keep the adversarial images: FILE.npz or a folder of PNGs.",
                        panel=_DATA)] = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
    precision: Precision = "fp32",
    threads: Threads = None,
    seed: Seed = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Fool a classifier with adversarial examples (FGSM, BIM, ILL, PGD, MI-FGSM, DeepFool, C&W), or measure
    its accuracy under attack on a test set.

    Attacks work on pixels in [0, 1]; the model wrapper owns the normalisation. One image: top-k before and
    after, the size of the perturbation, the adversarial image (-o) and the lecture's figure (--figure). A test
    set: a table of accuracy under attack for each method and eps (eps 0 = clean accuracy) and a plot.

    Examples:

      dlkit adv-attack cat.jpg --eps 0.007 -o adv.png --figure fig.png

      dlkit adv-attack cat.jpg --method pgd --target gibbon --eps 2 --transform jpeg:75,blur:1

      dlkit adv-attack --dataset cifar10 --data cifar10_jpeg.npz --per-class 100 --method fgsm,pgd --plot acc.png

      dlkit adv-attack --dataset mnist --data mnist.npz --method pgd --eps 0,0.1,0.2,0.3 --json
    """
    methods = parse_methods(method)
    transforms = parse_transforms(transform)
    dataset_mode = dataset is not None or data is not None
    if dataset is not None and dataset not in DEFAULT_MODELS and dataset != "folder":
        raise UsageError(f"--dataset {dataset}: expected mnist or cifar10 (or give an image folder as --data)")
    if image is not None and dataset_mode:
        raise UsageError("give an image or a dataset (--dataset/--data), not both")
    if image is None and not dataset_mode:
        raise UsageError("give an image to attack, or --dataset/--data for a robustness table (see --help)")
    if target is not None:
        bad = [m for m in methods if m not in TARGETED]
        if bad:
            raise UsageError(f"--target: {', '.join(bad)} cannot be targeted (ill aims at the least-likely class, "
                             f"deepfool at the nearest boundary); targeted methods: {', '.join(TARGETED)}")
    for name, value in (("--figure", figure), ("--plot", plot)):
        if value is not None and value.suffix.lower() != ".png":
            raise UsageError(f"{name} {value}: figures are written as PNG; give a .png path")
    step = parse_eps(step_size, "--step-size") if step_size is not None else None
    if step == 0:
        raise UsageError("--step-size must be positive")
    from dlkit.tasks.adversarial.attacks import AttackConfig

    base = AttackConfig(method=methods[0], steps=steps, step_size=step, restarts=restarts, random_start=random_start,
                        decay=decay, overshoot=overshoot, cw_c=cw_c, cw_kappa=cw_kappa, cw_lr=cw_lr, cw_search=cw_search)
    if dataset_mode:
        for name, value in (("--out", out), ("--figure", figure)):
            if value is not None:
                raise UsageError(f"{name} is for one image; in dataset mode use --plot and --save-adv")
        eps_list = parse_eps_list(eps if eps is not None else "0,2,4,8,16")
        _dataset(model, dataset, data, limit, per_class, batch_size, methods, base, eps_list, target, transforms, plot,
                 save_adv, device, precision, threads, seed, json_out, quiet)
    else:
        for name, value in (("--plot", plot), ("--save-adv", save_adv), ("--limit", limit), ("--per-class", per_class)):
            if value is not None:
                raise UsageError(f"{name} is for dataset mode (--dataset/--data)")
        if eps is not None and "," in eps:
            raise UsageError("one image takes one --eps (lists are for dataset mode)")
        value = parse_eps(eps) if eps is not None else (0.0 if all(m in MINIMAL for m in methods) else 8 / 255)
        if value == 0 and any(m not in MINIMAL for m in methods):
            raise UsageError("--eps 0 leaves the image unchanged; give a budget such as 8 or 0.007")
        if len(methods) > 1 and (out is not None or figure is not None):
            raise UsageError("--out and --figure take one --method")
        if image is not None and out is not None:
            from dlkit.core.io import ensure_can_write

            ensure_can_write(out, [image], overwrite)
        _image(image, model or IMAGENET, methods, base, value, target, top_k, out, figure, transforms,
               device, precision, threads, seed, json_out, quiet)


def _runtime(device, precision, threads, seed, quiet, json_out):
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime

    return make_runtime(device, precision, seed, distributed=False, threads=threads), Reporter(quiet=quiet, json_mode=json_out)


def _image(image, model, methods, base, eps, target, top_k, out, figure, transforms, device, precision, threads, seed,
           json_out, quiet) -> None:
    from dataclasses import replace

    from dlkit.tasks.adversarial.jobs import PhotoJob, attack_photo
    from dlkit.tasks.adversarial.model import load_victim

    rt, report = _runtime(device, precision, threads, seed, quiet, json_out)
    victim = load_victim(model, rt.device)
    for m in methods:
        job = PhotoJob(str(image), model, replace(base, method=m, eps=eps), target, top_k,
                       str(out) if out else None, str(figure) if figure else None, transforms)
        result, written = attack_photo(job, rt, report, victim)
        if json_out:
            typer.echo(json.dumps({"image": str(image), "model": victim.name, **result.to_json(), "written": written}))
        else:
            typer.echo(_render(result, victim.name))
            for p in written:
                typer.echo(p)


def _render(r, model: str) -> str:
    """The one-image result for people: top-k before and after side by side, sizes, verdicts."""
    head = f"{r.method} eps {eps_label(r.eps)} on {model}" + (f", target \"{r.target.label}\"" if r.target else "")
    lines = [head, f"{'':>3}  {'before':<32} {'conf':>6}   {'after':<32} {'conf':>6}"]
    for i, (b, a) in enumerate(zip(r.before, r.after)):
        lines.append(f"{i + 1:>3}  {b.label[:32]:<32} {b.confidence:>6.1%}   {a.label[:32]:<32} {a.confidence:>6.1%}")
    lines.append(f"perturbation: L-inf {r.linf:.4f} ({r.linf * 255:.2f}/255), L2 {r.l2:.3f}")
    verdict = "target reached" if r.target else "label changed"
    lines.append(f"attack: {verdict if r.success else 'failed'}" + (
        f" (target now {r.target.confidence:.1%})" if r.target else ""))
    if r.saved[0].index != r.after[0].index:
        lines.append(f"as an 8-bit image: \"{r.saved[0].label}\" {r.saved[0].confidence:.1%}")
    if r.transformed is not None:
        lines.append(f"after {r.transforms}: \"{r.transformed[0].label}\" {r.transformed[0].confidence:.1%} -> "
                     f"the attack {'survives' if r.survives else 'is destroyed'}")
    return "\n".join(lines)


def _dataset(model, dataset, data, limit, per_class, batch_size, methods, base, eps_list, target, transforms, plot, save_adv,
             device, precision, threads, seed, json_out, quiet) -> None:
    from dlkit.tasks.adversarial.jobs import DatasetJob, attack_dataset, attacks_for

    if data is None:
        raise UsageError(f"--dataset {dataset} needs --data PATH (e.g. {'mnist.npz' if dataset == 'mnist' else 'cifar10_jpeg.npz'})")
    if dataset == "folder":
        dataset = None
    if model is None:
        if dataset not in DEFAULT_MODELS:
            raise UsageError("give --model for an image folder")
        model = DEFAULT_MODELS[dataset]
    rt, report = _runtime(device, precision, threads, seed, quiet, json_out)
    job = DatasetJob(model, attacks_for(methods, base), eps_list, dataset, str(data), limit, per_class, batch_size, target,
                     transforms, str(plot) if plot else None, str(save_adv) if save_adv else None)
    rows = attack_dataset(job, rt, report)
    if json_out:
        for r in rows:
            typer.echo(json.dumps({**r, "dataset": dataset or str(data)}))
    else:
        typer.echo(_table(rows, transforms))
        for p in (plot, save_adv):
            if p is not None:
                typer.echo(str(p))


def _table(rows: list[dict], transforms) -> str:
    """Accuracy under attack, one row per method and eps; clean accuracy first."""
    clean = next((r for r in rows if r["eps"] == 0), None)
    cols = f"{'method':<9} {'eps':>9} {'accuracy':>9} {'success':>8} {'L-inf':>8} {'L2':>8}"
    cols += f" {'destroyed':>9}" if transforms else ""
    lines = [cols + f" {'seconds':>8}"]
    if clean is not None:
        lines.append(f"{'clean':<9} {'0':>9} {clean['accuracy']:>9.1%} {'-':>8} {'-':>8} {'-':>8}"
                     + (f" {'-':>9}" if transforms else "") + f" {'-':>8}  (n = {clean['n']})")
    for r in rows:
        if r["eps"] == 0:
            continue
        line = (f"{r['method']:<9} {eps_label(r['eps']):>9} {r['accuracy']:>9.1%} {r['success_rate']:>8.1%} "
                f"{r['linf']:>8.4f} {r['l2']:>8.3f}")
        if transforms:
            line += f" {r.get('destruction_rate', 0.0):>9.1%}"
        lines.append(line + f" {r['seconds']:>8.1f}")
    return "\n".join(lines)
