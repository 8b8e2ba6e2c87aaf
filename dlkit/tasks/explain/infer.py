"""`dlkit explain` as one function over a job: each image is classified, explained by every method, optionally
scored (deletion/insertion AUC), sanity-checked (cascading randomisation) and compared with its adversarial
version; a figure and the maps are written where asked. Batch policy of :mod:`dlkit.core.batch`: a bad image
is reported and the others go on."""

from __future__ import annotations

import contextlib
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dlkit.core.errors import UsageError
from dlkit.tasks.explain.data import fit_photo, image_inputs, resolve_target, to_photo_grid
from dlkit.tasks.explain.methods import Explainer, MethodConfig

if TYPE_CHECKING:
    from dlkit.core.batch import BatchOutcome

IMAGENET = "imagenet-efficientnet-lite0"


@dataclass
class ExplainJob:
    images: list[str]  # files, folders, globs or "-"
    methods: list[str]
    model: str = IMAGENET
    target: str | None = None  # class name or index; None: the predicted class
    top_k: int = 5
    figure: str | None = None  # a file (one image) or a folder (one <stem>.png per image)
    save_map: str | None = None  # folder for <stem>.<method>.npy, (H, W) in the photo's grid
    scores: bool = False  # deletion / insertion AUC beside the random and Gaussian maps
    baseline: str = "rise"  # deletion to the model's mean colour, insertion from a blurred copy (Petsiuk et al.)
    auc_steps: int = 50
    sanity: bool = False
    adversarial: "AdversarialConfig | None" = None
    method: MethodConfig = field(default_factory=MethodConfig)
    overwrite: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        """Refuse what cannot work before a model is loaded (a UsageError, exit 2)."""
        if self.figure is None:
            return
        out = Path(self.figure)
        several = len(self.images) > 1 or any(Path(a).is_dir() or a == "-" or glob.has_magic(a) for a in self.images)
        if figure_file(out) and several:
            raise UsageError(f"-o {out} is one file; with several images give a folder")
        if not figure_file(out) and out.suffix and not out.is_dir():
            raise UsageError(f"-o {out}: a figure is .png, .pdf or .svg (or give a folder)")


def figure_file(path: Path) -> bool:
    """-o names one figure file (else a folder of them)."""
    return path.suffix.lower() in (".png", ".pdf", ".svg")


@dataclass
class AdversarialConfig:
    attack: str = "pgd"  # pgd or fgsm (dlkit.vision.attacks)
    eps: float = 2 / 255
    steps: int = 10
    target: str | None = None  # a targeted attack towards this class


@dataclass
class Explanation:
    path: str
    top: list[dict]  # [{"label", "index", "prob"}], best first
    target: dict  # the explained class
    maps: dict[str, torch.Tensor]  # method -> (h, w) on the model's grid
    scores: dict | None = None  # name -> {"deletion", "insertion"}, maps and the two references
    sanity: list | None = None  # [SanityRow]
    adversarial: dict | None = None  # {"attack", "eps", "top", "target", "scores"}
    written: list[str] = field(default_factory=list)


def explain_images(job: ExplainJob, rt, report, emit) -> BatchOutcome:
    """Explain every image of ``job``; ``emit(Explanation)`` after each. Returns the batch outcome."""
    from dlkit.core.batch import run_each
    from dlkit.vision.classifier import load_classifier

    paths = image_inputs(job.images, report.warn)
    clf = load_classifier(job.model, rt.device)
    target = resolve_target(job.target, clf.classes) if job.target is not None else None
    adv_target = None
    if job.adversarial is not None and job.adversarial.target is not None:
        adv_target = resolve_target(job.adversarial.target, clf.classes)
    explainer = Explainer(clf, clf.input_size, job.method)
    if "gradcam" in job.methods:
        explainer.layer()  # a model without a feature map is refused once, not per image
    if "guided-backprop" in job.methods:
        explainer.guided()
        if explainer.relus == 0:
            report.warn("guided-backprop: the model has no ReLU modules; its map is the plain gradient")
    outputs = _Outputs(job, paths)

    def one(path: str) -> None:  # emitted, not kept: a folder of photos must not pile up maps in memory
        emit(explain_one(explainer, path, job, rt, target, adv_target, outputs))

    quiet_bar = contextlib.nullcontext(lambda advance=1, **fields: None)
    with report.progress(len(paths), "explain") if len(paths) > 1 else quiet_bar as update:
        return run_each(paths, one, report, what="images", progress=update)


class _Outputs:
    """Output names per image (unique within the run) checked against the inputs and --overwrite."""

    def __init__(self, job: ExplainJob, inputs: list[str]):
        self.job, self.inputs, self.used = job, inputs, set()
        self.single = job.figure is not None and figure_file(Path(job.figure))

    def stem(self, path: str) -> str:
        stem, n = Path(path).stem, 2
        base = stem
        while stem in self.used:
            stem, n = f"{base}-{n}", n + 1
        self.used.add(stem)
        return stem

    def paths(self, path: str) -> tuple[Path | None, dict[str, Path]]:
        from dlkit.core.io import guard_output

        stem = self.stem(path)
        fig = None
        if self.job.figure is not None:
            fig = Path(self.job.figure) if self.single else Path(self.job.figure) / f"{stem}.png"
            guard_output(fig, inputs=self.inputs, overwrite=self.job.overwrite)
        maps = {}
        if self.job.save_map is not None:
            for m in self.job.methods:
                maps[m] = guard_output(Path(self.job.save_map) / f"{stem}.{m}.npy", inputs=self.inputs,
                                       overwrite=self.job.overwrite)
        return fig, maps


def predictions(model, x: torch.Tensor, classes: list[str], k: int) -> tuple[list[dict], torch.Tensor]:
    with torch.no_grad():
        p = torch.softmax(model(x).float(), dim=1)[0].cpu()
    vals, idx = p.topk(min(k, p.numel()))
    return [{"label": classes[i], "index": int(i), "prob": round(float(v), 4)} for v, i in zip(vals, idx)], p


def explain_one(explainer: Explainer, path: str, job: ExplainJob, rt, target: int | None, adv_target: int | None,
                outputs: _Outputs) -> Explanation:
    from dlkit.vision.image import open_image

    fig_path, map_paths = outputs.paths(path)  # refuse an existing output before any work
    clf = explainer.model
    img = open_image(path, mode=None)
    x, geo = fit_photo(img, clf.input_size)
    x = x.unsqueeze(0).to(rt.device)  # (1, C, h, w)
    top, probs = predictions(clf, x, clf.classes, job.top_k)
    t = int(probs.argmax()) if target is None else target
    chosen = {"label": clf.classes[t], "index": t, "prob": round(float(probs[t]), 4),
              "predicted": target is None or t == int(probs.argmax())}
    maps, evidence = _maps(explainer, x, t, job)
    out = Explanation(path, top, chosen, maps)
    if job.scores:
        out.scores = _scores(clf, x[0], maps, t, job, evidence)
    if job.sanity:
        from dlkit.tasks.explain.sanity import cascading_randomisation

        out.sanity = cascading_randomisation(explainer, x, t, job.methods, trained=maps, seed=job.seed)
    adv_rows = None
    if job.adversarial is not None:
        out.adversarial, adv_rows = _adversarial(explainer, x, t, job, adv_target)
    if fig_path is not None:
        out.written.append(str(_figure(fig_path, x[0], out, adv_rows, path)))
    for m, p in map_paths.items():
        out.written.append(str(_save_map(p, to_photo_grid(maps[m], geo))))
    return out


def _maps(explainer: Explainer, x: torch.Tensor, t: int, job: ExplainJob) -> tuple[dict, dict]:
    """({method: (h, w) map}, {method: (h, w) signed evidence, which breaks the map's ties in the scores})."""
    pairs = {m: explainer.attribute_with_evidence(x, t, m, job.seed) for m in job.methods}
    return {m: p[0][0] for m, p in pairs.items()}, {m: p[1][0] for m, p in pairs.items()}


def _scores(clf, x: torch.Tensor, maps: dict, target: int, job: ExplainJob, evidence: dict) -> dict:
    from dlkit.tasks.explain.scores import faithfulness

    return faithfulness(clf, x, maps, target, job.baseline, job.auc_steps, job.method.batch, job.seed,
                        tie_breaks=evidence)


def _adversarial(explainer: Explainer, x: torch.Tensor, t: int, job: ExplainJob, adv_target: int | None):
    """Attack the image (label: the explained class), explain the adversarial image's predicted class."""
    from dlkit.vision import attacks

    cfg, clf = job.adversarial, explainer.model
    y = torch.tensor([t], device=x.device)
    goal = None if adv_target is None else torch.tensor([adv_target], device=x.device)
    if cfg.attack == "fgsm":
        adv = attacks.fgsm(clf, x, y, cfg.eps, goal)
    else:
        adv = attacks.pgd(clf, x, y, cfg.eps, goal, steps=cfg.steps, random_start=False)
    adv = adv.detach().mul(255).round().div(255)  # what an 8-bit file would hold
    top, probs = predictions(clf, adv, clf.classes, job.top_k)
    a = int(probs.argmax())
    maps, evidence = _maps(explainer, adv, a, job)
    info = {"attack": cfg.attack, "eps": round(cfg.eps, 6), "top": top,
            "target": {"label": clf.classes[a], "index": a, "prob": round(float(probs[a]), 4)},
            "linf": round(float((adv - x).abs().max()), 6)}
    if job.scores:
        info["scores"] = _scores(clf, adv[0], maps, a, job, evidence)
    return info, (adv[0], maps)


def _figure(path: Path, x: torch.Tensor, out: Explanation, adv_rows, source: str) -> Path:
    from dlkit.tasks.explain.figure import Row, explanation_figure

    t = out.target
    word = "predicted" if t["predicted"] else "target"
    rows = [Row(x, f'"{t["label"]}" {t["prob"]:.1%} ({word})', out.maps)]
    if adv_rows is not None:
        a = out.adversarial["target"]
        rows.append(Row(adv_rows[0], f'adversarial: "{a["label"]}" {a["prob"]:.1%}', adv_rows[1]))
    return explanation_figure(rows, path, suptitle=Path(source).name)


def _save_map(path: Path, m: torch.Tensor) -> Path:
    import io

    import numpy as np

    from dlkit.core.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, m.numpy().astype(np.float32))
    return atomic_write_bytes(path, buf.getvalue())
