"""The two things ``adv-attack`` does, each a job that checks itself and one function over it: attack one
photo (:class:`PhotoJob`, :func:`attack_photo`), or measure the robustness of classifiers on a test set
(:class:`DatasetJob`, :func:`attack_dataset`). ``cli.py`` parses, builds one job and calls one function."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from dlkit.core.errors import UsageError
from dlkit.tasks.adversarial import data, infer, model
from dlkit.tasks.adversarial.spec import TARGETED, Transform
from dlkit.vision.attacks import MINIMAL, AttackConfig

DEFAULT_MODELS = {"mnist": "mnist-cnn", "cifar10": "cifar10-airbench"}
IMAGENET = "imagenet-efficientnet-lite0"
# --robustness without --eps: the budgets robust models are compared at
ROBUST_EPS = {"mnist": [0.0, 0.1, 0.2, 0.3], "cifar10": [0.0, 2 / 255, 4 / 255, 8 / 255]}
MAX_BATCH_VALUES = 1 << 28  # --batch-size x C x H x W: 1 GiB of float32 per attacked batch


def _check_target(methods: list[str], target: str | None) -> None:
    bad = [m for m in methods if m not in TARGETED]
    if target is not None and bad:
        raise UsageError(f"--target: {', '.join(bad)} cannot be targeted (ill aims at the least-likely class, "
                         f"deepfool at the nearest boundary, apgd-ce is untargeted); targeted methods: "
                         f"{', '.join(TARGETED)}")


def _check_png(name: str, value: str | None) -> None:
    if value is not None and Path(value).suffix.lower() != ".png":
        raise UsageError(f"{name} {value}: figures are written as PNG; give a .png path")


def _refuse(stray: tuple[str, ...], mode: str) -> None:
    if stray:
        raise UsageError(f"{stray[0]} is {mode}")


@dataclass
class PhotoJob:
    """Attack one image with each of ``attacks`` (one budget); ``stray`` names dataset-mode options given."""

    image: str
    model: str = IMAGENET
    attacks: list[AttackConfig] = field(default_factory=lambda: [AttackConfig()])
    target: str | None = None  # class name or index
    top_k: int = 5
    out: str | None = None  # the adversarial image (lossless formats; JPEG warns)
    figure: str | None = None  # the lecture's figure
    transforms: list[Transform] = field(default_factory=list)
    overwrite: bool = False
    stray: tuple[str, ...] = ()

    def __post_init__(self):
        from dlkit.core.io import guard_output

        _refuse(self.stray, "for dataset mode (--dataset/--data)")
        methods = [a.method for a in self.attacks]
        _check_target(methods, self.target)
        _check_png("--figure", self.figure)
        if any(a.eps == 0 and a.method not in MINIMAL for a in self.attacks):
            raise UsageError("--eps 0 leaves the image unchanged; give a budget such as 8 or 0.007")
        if len(self.attacks) > 1 and (self.out is not None or self.figure is not None):
            raise UsageError("--out and --figure take one --method")
        for path in (self.out, self.figure):
            if path is not None:  # never over the input photo; an existing file only with --overwrite
                guard_output(path, inputs=[self.image], overwrite=self.overwrite)
        if self.out is not None and self.figure is not None and Path(self.out).resolve() == Path(self.figure).resolve():
            raise UsageError("--out and --figure name the same file")

    @classmethod
    def build(cls, image: str, methods: list[str], eps: list[float] | None, base: AttackConfig, **kw) -> "PhotoJob":
        """One config per method at the one budget (default 8/255; 0 for deepfool/cw alone, which search freely)."""
        if eps is not None and len(eps) != 1:
            raise UsageError("one image takes one --eps (lists are for dataset mode)")
        value = eps[0] if eps else (0.0 if all(m in MINIMAL for m in methods) else 8 / 255)
        return cls(image, attacks=[replace(base, method=m, eps=value) for m in methods], **kw)


@dataclass
class DatasetJob:
    """Accuracy of each of ``models`` under each attack at each eps on a test set."""

    models: list[str]
    attacks: list[AttackConfig]
    eps: list[float]
    dataset: str | None = None  # mnist | cifar10 (from the .npz in `data`) | None: an image folder
    data: str | None = None
    limit: int | None = None
    per_class: int | None = None
    batch_size: int = 128
    target: str | None = None
    transforms: list[Transform] = field(default_factory=list)
    plot: str | None = None
    save_adv: str | None = None
    overwrite: bool = False
    stray: tuple[str, ...] = ()

    def __post_init__(self):
        from dlkit.core.io import guard_output

        _refuse(self.stray, "for one image; in dataset mode use --plot and --save-adv")
        if self.data is None:
            example = "mnist.npz" if self.dataset == "mnist" else "cifar10_jpeg.npz"
            raise UsageError(f"--dataset {self.dataset} needs --data PATH (e.g. {example})")
        if self.dataset is not None and self.dataset not in DEFAULT_MODELS:
            raise UsageError(f"--dataset {self.dataset}: expected mnist or cifar10 (or give an image folder as --data)")
        if not self.models:
            if self.dataset not in DEFAULT_MODELS:
                raise UsageError("give --model for an image folder")
            self.models = [DEFAULT_MODELS[self.dataset]]
        if len(self.models) > 1 and (self.save_adv or self.plot):
            raise UsageError("--save-adv and --plot take one --model")
        _check_target([a.method for a in self.attacks], self.target)
        _check_png("--plot", self.plot)
        if not 1 <= self.batch_size <= 100_000:
            raise UsageError(f"--batch-size {self.batch_size}: must be 1-100000")
        inputs = [self.data] if self.data else []
        if self.plot is not None:
            guard_output(self.plot, inputs=inputs, overwrite=self.overwrite)
        if self.save_adv is not None:
            _guard_save_adv(self.save_adv, inputs, self.overwrite)


def _guard_save_adv(path: str, inputs: list[str], overwrite: bool) -> None:
    """``FILE.npz`` follows the output policy; a folder must be new or empty unless ``--overwrite``."""
    from dlkit.core.errors import OutputError
    from dlkit.core.io import guard_output

    p = Path(path)
    if p.suffix.lower() == ".npz":
        guard_output(p, inputs=inputs, overwrite=overwrite)
        return
    if p.exists() and not p.is_dir():
        raise OutputError(f"--save-adv '{path}' is a file; give FILE.npz or a folder")
    if any(Path(i).resolve() == p.resolve() for i in inputs):
        raise OutputError(f"--save-adv '{path}' is the input folder; write the images elsewhere")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise OutputError(f"--save-adv folder '{path}' is not empty; pass --overwrite to write into it")


def robustness_attacks(base: AttackConfig, restarts: int) -> list[AttackConfig]:
    """The stronger set for robust models: FGSM, PGD-40 and PGD-100 with ``restarts`` random restarts
    (Madry et al. 2018's evaluation), and APGD-CE (Croce & Hein 2020) with the same restarts."""
    r = max(1, restarts)
    tag = f"x{r}" if r > 1 else ""
    return [replace(base, method="fgsm", name="fgsm"),
            replace(base, method="pgd", steps=40, restarts=r, name=f"pgd-40{tag}"),
            replace(base, method="pgd", steps=100, restarts=r, name=f"pgd-100{tag}"),
            replace(base, method="apgd-ce", steps=100, restarts=r, name=f"apgd-ce{tag}")]


# ---------------------------------------------------------------- the task functions
def attack_photo(job: PhotoJob, rt, report) -> list[tuple]:
    """Attack one image with each configured method; writes ``job.out`` / ``job.figure`` when asked.
    Returns [(ImageResult, written paths)] in the order of ``job.attacks``."""
    victim = model.load_victim(job.model, rt.device)
    net = model.prepare(victim, rt)
    target = data.resolve_target(job.target, victim.classes) if job.target is not None else None
    x, _ = data.load_photo(job.image, victim, report.info)
    x = x.to(rt.device)
    results = []
    for cfg in job.attacks:
        result = infer.attack_image(net, victim.classes, x, cfg, target, job.transforms, job.top_k, rt.seed)
        written = []
        if job.out:
            written.append(_write_adv(result, job.out, net, victim, report, rt.device))
        if job.figure:
            from dlkit.tasks.adversarial.figure import lecture_figure

            noise = infer.noise_prediction(net, result, victim.classes)
            written.append(str(lecture_figure(result, job.figure, victim.name, noise)))
        results.append((victim.name, result, written))
    return results


def _write_adv(result, out: str, net, victim, report, device) -> str:
    """The adversarial image at the model's resolution; a JPEG is written too, with a warning and its label."""
    from dlkit.vision.image import image_format, save_image

    kind = image_format(out)
    path = save_image(result.adv[0], out)
    if kind == "JPEG":
        jpeg = data.apply_transforms(data.quantize(result.adv), [Transform("jpeg", 95)]).to(device)
        again = infer.top_k(net, jpeg, victim.classes, 1)[0]
        report.warn(f"'{out}' is a JPEG: lossy compression destroys much of an adversarial perturbation "
                    f"(the model now says \"{again.label}\" {again.confidence:.1%}); use .png for the real thing")
    return str(path)


def attack_dataset(job: DatasetJob, rt, report) -> list[dict]:
    """Accuracy under each attack at each eps for each model (see infer.robustness); one record per
    (model, attack, eps), eps 0 being the clean accuracy."""
    names = [model.short_name(s) for s in job.models]
    if len(set(names)) < len(names):  # two files called model.safetensors: name them by their folders
        names = [model.short_name(s, parent=True) for s in job.models]
    rows = []
    for spec, name in zip(job.models, names):
        rows += _one_model(job, spec, name, rt, report)
    return rows


def _one_model(job: DatasetJob, spec: str, name: str, rt, report) -> list[dict]:
    victim = model.load_victim(spec, rt.device)
    victim.name = name
    c, h, w = victim.input_size
    if job.batch_size * c * h * w > MAX_BATCH_VALUES:
        raise UsageError(f"--batch-size {job.batch_size}: {c}x{h}x{w} images take more than 1 GiB per batch; "
                         f"use at most {MAX_BATCH_VALUES // (c * h * w)}")
    net = model.prepare(victim, rt)
    target = data.resolve_target(job.target, victim.classes) if job.target is not None else None
    images, labels, _ = data.load_test_set(job.dataset, job.data, victim, job.limit, report.info, job.per_class)
    if images.shape[0] == 0:
        raise UsageError("the test set is empty")
    writer = data.AdvWriter(job.save_adv, labels) if job.save_adv else None
    total = infer.attack_runs(job.attacks, job.eps, images.shape[0], job.batch_size)
    report.info(f"{victim.name}: {images.shape[0]} test images, {len(job.attacks)} attack(s) x "
                f"{sum(1 for e in job.eps if e > 0)} eps on {rt.device}")
    t0 = time.perf_counter()
    with report.progress(total, f"adv-attack {victim.name}") as update:
        rows = infer.robustness(net, images, labels, job.attacks, job.eps, job.batch_size, rt.device, target,
                                job.transforms, update, writer, rt.seed)
    report.info(f"done in {time.perf_counter() - t0:.1f} s")
    for r in rows:
        r["model"] = victim.name
    if writer is not None:
        report.info(f"adversarial images: {writer.close()}")
    if job.plot:
        from dlkit.tasks.adversarial.figure import accuracy_plot

        title = f"{victim.name} on {job.dataset or Path(job.data).name}, {images.shape[0]} test images"
        report.info(f"plot: {accuracy_plot(rows, job.plot, title)}")
    return rows
