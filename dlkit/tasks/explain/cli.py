"""`dlkit explain`: a thin command over dlkit.tasks.explain (no torch at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlkit.core.errors import UsageError
from dlkit.core.options import opt as _opt, Device, Json, Overwrite, Quiet, Seed, Threads

app = typer.Typer()
IMAGENET = "imagenet-efficientnet-lite0"
METHOD_NAMES = "saliency, smoothgrad, integrated-gradients, gradcam, occlusion, guided-backprop"
_SCORES = "Scores and checks"
_ADV = "Adversarial comparison"
_SETTINGS = "Method settings"


@app.command("explain")
def explain(
    images: Annotated[list[str], typer.Argument(help="Images, folders, globs, or - to read paths from stdin.",
                                                show_default=False)],
    model: Annotated[str, _opt("--model", "-m", help="Classifier: a bundled name (mnist-cnn, cifar10-resnet), a "
                               f"classifier .safetensors file, or {IMAGENET} (ImageNet, offline weights).")] = IMAGENET,
    method: Annotated[str, _opt("--method", help=f"Method(s), comma-separated: {METHOD_NAMES}, or all.")]
    = "saliency,integrated-gradients,gradcam",
    target: Annotated[Optional[str], _opt("--target", help="Explain this class (name or index) instead of the "
                                          "predicted one.")] = None,
    top_k: Annotated[int, _opt("--top-k", min=1, max=20, help="Classes listed per image.")] = 3,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Figure: FILE.png/.pdf/.svg (one image) or a folder "
                                        "(one <name>.png per image).")] = None,
    save_map: Annotated[Optional[Path], _opt("--save-map", help="Folder for <name>.<method>.npy: float32 (H, W) maps "
                                             "in the input image's pixel grid.")] = None,
    scores: Annotated[bool, _opt("--scores", help="Deletion and insertion AUC of each map beside a random and a "
                                 "centred-Gaussian map (Petsiuk et al. 2018).", panel=_SCORES)] = False,
    baseline: Annotated[str, _opt("--baseline", choices=("rise", "mean", "zero", "blur"), panel=_SCORES,
                                  help="--scores: rise deletes to the model's mean colour and inserts into a "
                                  "blurred copy (Petsiuk et al.); mean, zero (black) and blur use one for both.")]
    = "rise",
    auc_steps: Annotated[int, _opt("--auc-steps", min=2, max=1000, help="Steps of the deletion/insertion curves.",
                                   panel=_SCORES)] = 50,
    sanity: Annotated[bool, _opt("--sanity", help="Model-randomisation check (Adebayo et al. 2018): rank correlation "
                                 "of each map with the map of the model re-initialised from the top layer down.",
                                 panel=_SCORES)] = False,
    compare_adversarial: Annotated[bool, _opt("--compare-adversarial", help="Also attack the image and explain the "
                                              "adversarial version (figure: second row).", panel=_ADV)] = False,
    attack: Annotated[str, _opt("--attack", choices=("pgd", "fgsm"), help="The attack.",
                                panel=_ADV)] = "pgd",
    eps: Annotated[str, _opt("--eps", help="Attack budget (L-inf): 2 (pixel levels of 255), 2/255 or 0.008.",
                             panel=_ADV)] = "2",
    adv_target: Annotated[Optional[str], _opt("--adv-target", panel=_ADV,
                                              help="Targeted attack towards this class (name or index).")] = None,
    ig_steps: Annotated[int, _opt("--ig-steps", min=2, max=1000, help="integrated-gradients: points on the path.",
                                  panel=_SETTINGS)] = 32,
    smooth_samples: Annotated[int, _opt("--smooth-samples", min=1, max=1000, help="smoothgrad: noisy copies.",
                                        panel=_SETTINGS)] = 16,
    batch_size: Annotated[int, _opt("--batch-size", min=1, help="Images per forward pass inside a method and the "
                                    "scores.", panel=_SETTINGS)] = 16,
    overwrite: Overwrite = False,
    device: Device = "auto",
    threads: Threads = None,
    seed: Seed = 0,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Explain a classifier's decision: which pixels made it say "Egyptian cat"?

    Prints the top classes and, with --scores and --sanity, how faithful each map is and whether it depends on
    the model at all. -o writes a figure (the image, then each method's map over it); --save-map the maps.
    Unreadable images are reported one line each; the others are explained and the exit code is 1 at the end.

    Examples:

      dlkit explain cat.jpg -o cat-maps.png

      dlkit explain photos/ --method gradcam,guided-backprop --scores --sanity --json

      dlkit explain digit.png --model mnist-cnn --method all --save-map maps/

      dlkit explain cat.jpg --compare-adversarial --eps 2 -o cat-adv.png
    """
    from dlkit.tasks.explain.methods import MethodConfig, parse_methods

    methods = parse_methods(method)
    adversarial = None
    if compare_adversarial:
        from dlkit.tasks.explain.infer import AdversarialConfig

        adversarial = AdversarialConfig(attack, _parse_eps(eps), target=adv_target)
    elif adv_target is not None:
        raise UsageError("--adv-target needs --compare-adversarial")

    from dlkit.core.io import results
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.explain.infer import ExplainJob, explain_images

    job = ExplainJob(images, methods, model=model, target=target, top_k=top_k, figure=str(out) if out else None,
                     save_map=str(save_map) if save_map else None, scores=scores, baseline=baseline,
                     auc_steps=auc_steps, sanity=sanity, adversarial=adversarial, overwrite=overwrite, seed=seed,
                     method=MethodConfig(ig_steps=ig_steps, smooth_samples=smooth_samples, batch=batch_size))
    report = Reporter(quiet=quiet, json_mode=json_out)
    rt = make_runtime(device, "fp32", seed, distributed=False, threads=threads)
    outcome = explain_images(job, rt, report, lambda e: results.line(_json(e, model) if json_out else _text(e)))
    results.finish()
    outcome.raise_if_failed()


def _parse_eps(text: str) -> float:
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            value = float(a) / float(b)
        else:
            value = float(text)
            value = value / 255 if value >= 1 else value
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--eps {text!r}: expected 2 (of 255), 2/255 or 0.008") from None
    if not 0 < value <= 1:
        raise UsageError(f"--eps {text!r}: the budget must lie in (0, 1] pixel units")
    return value


def _json(e, model: str) -> str:
    rec = {"path": e.path, "model": model, "top": e.top, "target": e.target, "methods": list(e.maps)}
    if e.scores is not None:
        rec["scores"] = e.scores
    if e.sanity is not None:
        rec["sanity"] = [{"layers": r.layers, "down_to": r.down_to, "spearman": _rounded(r.spearman)} for r in e.sanity]
    if e.adversarial is not None:
        rec["adversarial"] = e.adversarial
    rec["written"] = e.written
    return json.dumps(rec)


def _rounded(d: dict) -> dict:
    return {k: (None if v != v else round(v, 4)) for k, v in d.items()}  # NaN (a constant map) -> null


def _text(e) -> str:
    t = e.target
    lines = [f"{e.path}: \"{t['label']}\" {t['prob']:.1%}" + ("" if t["predicted"] else " (--target)")
             + "; top: " + ", ".join(f"{p['label']} {p['prob']:.1%}" for p in e.top)]
    if e.scores is not None:
        lines += _score_lines(e.scores)
    if e.sanity is not None:
        methods = list(e.sanity[0].spearman)
        lines.append("  sanity: Spearman rank correlation with the map after re-initialising N layers from the top")
        lines.append(f"  {'N':>5}  {'down to':<28} " + " ".join(f"{m[:20]:>20}" for m in methods))
        for r in e.sanity:
            vals = " ".join(f"{r.spearman[m]:>20.3f}" for m in methods)
            lines.append(f"  {r.layers:>5}  {r.down_to[-28:]:<28} {vals}")
    if e.adversarial is not None:
        a = e.adversarial
        lines.append(f"  adversarial ({a['attack']}, L-inf {a['linf'] * 255:.2f}/255): \"{a['target']['label']}\" "
                     f"{a['target']['prob']:.1%}")
        if "scores" in a:
            lines += ["  " + ln for ln in _score_lines(a["scores"])]
    return "\n".join(lines + e.written)


def _score_lines(scores: dict) -> list[str]:
    out = [f"  {'map':<22} {'deletion AUC':>12} {'insertion AUC':>13}"]
    for name, s in scores.items():
        out.append(f"  {name:<22} {s['deletion']:>12.3f} {s['insertion']:>13.3f}")
    return out
