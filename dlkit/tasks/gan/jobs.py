"""What ``dlkit gan-sample`` does, as one function over a job that validates itself: draw samples from a
generator and write them (a grid, one file per sample, a toy's plot) or return a toy's numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from dlkit.core.errors import UsageError


@dataclass
class SampleJob:
    """``n`` samples of ``model`` (class ``klass`` for a conditional one) into ``out`` (a folder; for a toy a plot
    .png) or ``grid`` (one image); ``interpolate``: a latent walk grid instead. No target: a toy's numbers."""

    model: str = "mnist-dcgan"
    n: int = 64
    out: str | None = None
    grid: str | None = None
    interpolate: bool = False
    klass: int | None = None
    seed: int = 0
    overwrite: bool = False  # replace an existing grid/plot, or the numbered samples in ``out``

    def __post_init__(self) -> None:
        if self.out is not None and self.grid is not None:
            raise UsageError("give either --out FOLDER or --grid FILE, not both")
        if self.interpolate and self.grid is None:
            raise UsageError("--interpolate writes a grid: add --grid FILE.png")
        if self.n < 1:
            raise UsageError(f"-n must be at least 1 (got {self.n})")


@dataclass
class SampleResult:
    kind: str  # "grid" | "images" | "plot" | "values"
    path: str | None = None  # the grid, the folder or the plot
    paths: list[str] = field(default_factory=list)  # "images": one file per sample
    values: Iterable[list[float]] = field(default_factory=list)  # "values": a toy's samples, produced as read
    count: int = 0


def sample_job(job: SampleJob, rt) -> SampleResult:
    """Draw the job's samples on runtime ``rt`` and write them where the job says."""
    import torch

    from dlkit.tasks.gan import infer
    from dlkit.vision.grid import save_grid

    gan, meta = infer.load_gan(job.model, device=rt.device)
    _check(job, gan.cfg)
    if job.interpolate:
        images = infer.interpolate(gan, seed=job.seed, klass=job.klass, autocast=rt.autocast)
        return SampleResult("grid", str(save_grid(images, Path(job.grid), nrow=8)), count=len(images))
    batches = infer.iter_samples(gan, job.n, seed=job.seed, klass=job.klass, autocast=rt.autocast)
    if not gan.cfg.is_image:
        if job.out is None and job.grid is None:  # streamed: `gan-sample -n 1e7 | head -1` stops at once
            return SampleResult("values", values=(row for b in batches for row in b.tolist()), count=job.n)
        return _toy(torch.cat(list(batches)), meta.get("toy") or "gaussian", job.out or job.grid)
    if job.grid is not None:
        x = torch.cat(list(batches))
        return SampleResult("grid", str(save_grid(x, Path(job.grid))), count=len(x))
    if job.out is None:
        raise UsageError("image samples need --out FOLDER or --grid FILE.png")
    paths = infer.write_images(batches, job.out, n=job.n, overwrite=job.overwrite)  # one batch in memory at a time
    return SampleResult("images", str(job.out), paths=[str(p) for p in paths], count=len(paths))


MAX_GRID = 10_000  # samples in one grid image
MAX_FILES = 1_000_000  # samples written as files by one command
MAX_PLOT = 1_000_000  # toy samples in one scatter plot


def _check(job: SampleJob, cfg) -> None:
    """Bounds from what each target holds, then the output policy, before any sample is drawn."""
    from dlkit.core.io import guard_output
    from dlkit.core.limits import at_most
    from dlkit.tasks.gan.infer import _labels

    _labels(cfg, 1, job.klass, "cpu")  # a bad --class is a usage error, whatever the target
    if job.grid is not None and not job.interpolate and cfg.is_image:
        side = cfg.data_shape[-1]
        at_most("-n", job.n, MAX_GRID, f"--grid puts every sample into one image ({MAX_GRID:,} of {side} px make a "
                f"{int(MAX_GRID ** 0.5) * (side + 2):,} px square); use --out FOLDER for more")
    elif job.out is not None and cfg.is_image:
        at_most("-n", job.n, MAX_FILES, "--out writes one file per sample; run several times with other --seed")
    elif (job.out or job.grid) is not None:
        at_most("-n", job.n, MAX_PLOT, "one scatter plot of the samples; print them instead (no --out)")
    target = job.grid if job.grid is not None else (job.out if not cfg.is_image else None)
    if target is not None:
        guard_output(target, overwrite=job.overwrite)


def _toy(x, toy: str, target: str | None) -> SampleResult:
    """A toy's samples: plotted against real ones when there is a target, else returned as numbers."""
    if target is None:
        return SampleResult("values", values=x.tolist(), count=len(x))
    import torch

    from dlkit.tasks.gan.data import sample_toy
    from dlkit.tasks.gan.figures import plot_toy

    real = sample_toy(toy, len(x), torch.Generator().manual_seed(1))
    return SampleResult("plot", str(plot_toy(toy, real.numpy(), x.numpy(), target, f"{len(x)} samples")), count=len(x))
