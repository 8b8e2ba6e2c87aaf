"""The two things ``adv-attack`` does, each one function over a config: attack one photo, or measure the
robustness of a classifier on a test set. ``cli.py`` parses, builds the config and calls one of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from dlkit.core.errors import UsageError
from dlkit.tasks.adversarial import data, infer, model
from dlkit.tasks.adversarial.attacks import AttackConfig
from dlkit.tasks.adversarial.spec import Transform


@dataclass
class PhotoJob:
    image: str
    model: str
    attack: AttackConfig
    target: str | None = None  # class name or index
    top_k: int = 5
    out: str | None = None  # the adversarial image (lossless formats; JPEG warns)
    figure: str | None = None  # the lecture's figure
    transforms: list[Transform] = field(default_factory=list)


@dataclass
class DatasetJob:
    model: str
    attacks: list[AttackConfig]
    eps: list[float]
    dataset: str | None = None
    data: str | None = None
    limit: int | None = None
    per_class: int | None = None
    batch_size: int = 128
    target: str | None = None
    transforms: list[Transform] = field(default_factory=list)
    plot: str | None = None
    save_adv: str | None = None


def attack_photo(job: PhotoJob, rt, report, victim=None):
    """Attack one image; writes ``job.out`` / ``job.figure`` when asked. Returns (ImageResult, written paths)."""
    victim = victim or model.load_victim(job.model, rt.device)
    net = model.prepare(victim, rt)
    target = data.resolve_target(job.target, victim.classes) if job.target is not None else None
    x, _ = data.load_photo(job.image, victim, report.info)
    x = x.to(rt.device)
    result = infer.attack_image(net, victim.classes, x, job.attack, target, job.transforms, job.top_k, rt.seed)
    written = []
    if job.out:
        written.append(_write_adv(result, job.out, net, victim, report, rt.device))
    if job.figure:
        from dlkit.tasks.adversarial.figure import lecture_figure

        noise = infer.noise_prediction(net, result, victim.classes)
        written.append(str(lecture_figure(result, job.figure, victim.name, noise)))
    return result, written


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


def attack_dataset(job: DatasetJob, rt, report, victim=None) -> list[dict]:
    """Accuracy under each attack at each eps on the selected test examples (see infer.robustness)."""
    victim = victim or model.load_victim(job.model, rt.device)
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
    with report.progress(total, "adv-attack") as update:
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


def attacks_for(methods: list[str], base: AttackConfig) -> list[AttackConfig]:
    """One config per method, sharing the user's settings."""
    return [replace(base, method=m) for m in methods]
