"""The three things ``dlkit superres`` does, each a job that validates itself, and :func:`run_job` for all three:

* :class:`UpscaleJob`: images or folders -> upscaled files (the batch policy of :mod:`dlkit.core.batch`);
* :class:`EvalJob`: the benchmark protocol on a folder of HR images (Set5, Set14...) -> a table;
* :class:`CompareJob`: the lecture's panel bicubic | model(s) | original.

Imports no torch: the command builds and checks its job before anything large is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from dlkit.core.errors import DataError, UsageError
from dlkit.tasks.superres import DEFAULT_MAX_PIXELS

DEFAULT_MODEL = "srresnet-x4"


@dataclass
class Tiling:
    """LR tile side (None: chosen from the free memory; 0: the whole image) and overlap (None: the receptive field)."""

    tile: int | None = None
    overlap: int | None = None

    def __post_init__(self) -> None:
        if self.tile and self.tile < 8:
            raise UsageError(f"--tile {self.tile} is too small; use 0 (no tiling) or at least 8")

    def describe(self) -> str:
        return {None: "tiles chosen from the free memory", 0: "whole images"}.get(self.tile, f"tiles of {self.tile} px")


@dataclass
class UpscaleJob:
    """Upscale ``inputs`` (files or folders) with ``model`` into ``out`` (a file for one input, else a folder)."""

    inputs: list[str]
    out: str | None = None
    model: str = DEFAULT_MODEL
    scale: int | None = None
    tiling: Tiling = field(default_factory=Tiling)
    max_pixels: int = DEFAULT_MAX_PIXELS
    overwrite: bool = False

    def __post_init__(self) -> None:
        from dlkit.tasks.superres.paths import check_out

        if not self.inputs:
            raise UsageError("give images to upscale, --eval DIR or --compare PANEL (see --help)")
        check_out([Path(p) for p in self.inputs], Path(self.out) if self.out else None)


@dataclass
class EvalJob:
    """Benchmark ``models`` (and bicubic) on the HR images of ``folder``."""

    folder: str
    models: list[str] = field(default_factory=lambda: default_eval_models())
    scale: int | None = None
    tiling: Tiling = field(default_factory=Tiling)
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class CompareJob:
    """Write the panel ``panel`` for an LR input ``lr`` and/or its original ``hr`` (alone: LR made from it)."""

    panel: str
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    lr: str | None = None
    hr: str | None = None
    scale: int | None = None
    tiling: Tiling = field(default_factory=Tiling)
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.lr is None and self.hr is None:
            raise UsageError("--compare needs an input image or --hr")


Job = Union[UpscaleJob, EvalJob, CompareJob]


def default_eval_models() -> list[str]:
    """The default model when it is installed; else bicubic alone (the benchmark still runs)."""
    from dlkit.core.zoo import find_model

    return [DEFAULT_MODEL] if find_model(DEFAULT_MODEL) is not None else ["bicubic"]


def make_job(inputs: list[str], out: str | None, models: list[str] | None, eval_dir: str | None,
             compare: str | None, hr: str | None, scale: int | None, tiling: Tiling, max_pixels: int,
             overwrite: bool = False) -> Job:
    """The job the options of ``dlkit superres`` ask for; a combination that means nothing is a UsageError."""
    common = dict(scale=scale, tiling=tiling, max_pixels=max_pixels)
    if eval_dir is not None:
        if inputs or compare is not None:
            raise UsageError("--eval benchmarks a folder; it cannot be combined with input images or --compare")
        return EvalJob(eval_dir, models or default_eval_models(), **common)
    if compare is not None:
        if len(inputs) > 1:
            raise UsageError("--compare draws one image; give one input (or only --hr)")
        return CompareJob(compare, models or [DEFAULT_MODEL], inputs[0] if inputs else None, hr, **common)
    if hr is not None:
        raise UsageError("--hr is used with --compare")
    if models and len(models) > 1:
        raise UsageError("give one --model to upscale with (several are for --eval and --compare)")
    return UpscaleJob(inputs, out, (models or [DEFAULT_MODEL])[0], overwrite=overwrite, **common)


@dataclass
class EvalReport:
    dataset: str
    result: object  # infer.EvalResult: means per method and per-image figures
    outcome: object  # core.batch.BatchOutcome of reading and measuring together


def run_job(job: Job, rt, report, on_file: Callable | None = None):
    """Do ``job``: an :class:`UpscaleJob` gives the BatchOutcome of its files (``on_file(FileResult)`` as
    each is written), an :class:`EvalJob` an :class:`EvalReport`, a :class:`CompareJob` the panel's dict."""
    if isinstance(job, UpscaleJob):
        return _upscale(job, rt, report, on_file)
    if isinstance(job, EvalJob):
        return _evaluate(job, rt, report)
    return _compare(job, rt, report)


def _upscale(job: UpscaleJob, rt, report, on_file):
    from dlkit.tasks.superres import infer

    inputs = [Path(p) for p in job.inputs]
    if len(inputs) == 1 and inputs[0].is_file():  # a bomb or a broken file: refused before the model loads
        from dlkit.vision.image import check_image

        check_image(inputs[0], job.max_pixels)
    nets, scale = infer.load_models([job.model], job.scale, rt.device)
    name, net = next(iter(nets.items()), ("bicubic", None))
    report.info(f"superres: x{scale} with {name}, {job.tiling.describe()}")
    return infer.upscale_files(inputs, Path(job.out) if job.out else None, net, scale, rt=rt, tile=job.tiling.tile,
                               overlap=job.tiling.overlap, overwrite=job.overwrite, report=report, on_result=on_file,
                               max_pixels=job.max_pixels, progress=report.progress)


def _evaluate(job: EvalJob, rt, report) -> EvalReport:
    from dlkit.core.batch import BatchOutcome
    from dlkit.tasks.superres import infer

    nets, scale = infer.load_models(job.models, job.scale, rt.device)
    images, read = infer.benchmark_images(job.folder, report, job.max_pixels)
    with report.progress(len(images), "superres --eval") as update:
        res, measured = infer.evaluate(images, scale, nets, rt=rt, tile=job.tiling.tile, overlap=job.tiling.overlap,
                                       progress=update, report=report)
    if not res.images:
        raise DataError(f"no image in '{job.folder}' could be measured (see the warnings above)")
    outcome = BatchOutcome(total=read.total, failed=read.failed + measured.failed, what="images")
    return EvalReport(Path(job.folder).name, res, outcome)


def _compare(job: CompareJob, rt, report) -> dict:
    from dlkit.tasks.superres import infer
    from dlkit.tasks.superres.figures import compare

    nets, scale = infer.load_models(job.models, job.scale, rt.device)
    result = compare(nets, scale, Path(job.panel), Path(job.lr) if job.lr else None, Path(job.hr) if job.hr else None,
                     rt=rt, tile=job.tiling.tile, overlap=job.tiling.overlap, warn=report.warn,
                     max_pixels=job.max_pixels)
    return {**result, "scale": scale}
