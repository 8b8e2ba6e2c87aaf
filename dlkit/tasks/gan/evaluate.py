"""Evaluating a generator: FID, the Parzen-window log-likelihood, the toy metrics - always with the
reference row computed the same way on real data (real against real), so a figure can be read.

Each function returns a list of rows ``{"what": ..., metric: value, ...}``: the model first, the reference last.
"""

from __future__ import annotations

import contextlib
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


def evaluate_fid(model: GANPair, real: torch.Tensor, other: torch.Tensor, n: int, seed: int = 0,
                 inception: str | os.PathLike | None = None, device="cpu", batch: int = 50,
                 cache: Callable[[str], Path | None] | None = None, labels: tuple[str, str] = ("train", "test"),
                 progress: Callable[[int], None] | None = None, size: int = fidlib.INCEPTION_SIZE,
                 autocast=contextlib.nullcontext) -> list[dict]:
    """FID of n generated images against n real images (``real``, uint8), and the reference FID of n other
    real images (``other``, e.g. the test split) against the same real set. ``cache(name)`` may give a file
    for the real features (they are reused by every model)."""
    if n < 2:
        raise UsageError(f"--n must be at least 2 for FID (got {n})")
    if model.cfg.data_shape[1:] != tuple(real.shape[2:]) or model.cfg.data_shape[0] != real.shape[1]:
        raise DataError(f"the model makes {'x'.join(map(str, model.cfg.data_shape))} images but the data are "
                        f"{'x'.join(map(str, real.shape[1:]))}")
    net = fidlib.load_inception(inception, device)
    real_n, other_n = _pick(real, n, seed), _pick(other, n, seed + 1)

    def feats(imgs, name):
        compute = lambda: fidlib.features(net, imgs, batch=batch, device=device, progress=progress, size=size)  # noqa: E731
        return fidlib.cached_features(cache(name) if cache else None, compute)

    f_real = feats(real_n, f"{labels[0]}-{len(real_n)}")
    f_other = feats(other_n, f"{labels[1]}-{len(other_n)}")
    gen = lambda start, count: sample(model, count, seed=seed * 1_000_003 + start, autocast=autocast)  # noqa: E731
    f_gen = fidlib.features(net, gen, n=n, batch=batch, device=device, progress=progress, size=size)
    return [{"what": "model", "fid": fidlib.fid_from_features(f_gen, f_real), "n": n, "against": f"{labels[0]} ({len(real_n)})"},
            {"what": f"real {labels[1]} vs real {labels[0]} (reference)", "fid": fidlib.fid_from_features(f_other, f_real),
             "n": len(other_n), "against": f"{labels[0]} ({len(real_n)})"}]


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
        raise DataError(f"--data '{data}' does not exist")
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


def real_feature_cache(data: str, shape, seed: int) -> Callable[[str], Path]:
    """Where the Inception features of real images are cached: $DLKIT_HOME/cache, keyed by the data file
    (path, size, mtime), the image shape, the subset's seed and name (e.g. ``train-10000``)."""
    from dlkit.core.zoo import home_dir

    st = Path(data).stat()
    key = f"{Path(data).resolve()}|{st.st_size}|{st.st_mtime_ns}|{tuple(shape)}|{seed}"
    return lambda what: home_dir() / "cache" / f"fid-{fidlib.cache_key(key, what)}.npy"


def run_eval(spec: str, metric: str, dataset: str | None, data: str | None, n: int, inception: str | None,
             batch: int, seed: int, rt, report) -> list[dict]:
    """What ``gan-eval`` does: load the model, read the real data, score, return the rows. The runtime's
    precision applies to the generator only; Inception features are always computed in fp32."""
    from dlkit.tasks.gan.infer import load_gan

    device, autocast = rt.device, rt.autocast
    model, meta = load_gan(spec, device=device)
    toy = meta.get("toy")
    if metric == "toy":
        if not toy:
            raise UsageError("--metric toy is for the gaussian/ring models; use fid or parzen for images")
        return evaluate_toy(model, toy, n, seed, autocast)
    if toy:
        raise UsageError(f"'{spec}' is a toy ({toy}) model; use --metric toy")
    train, test, name = _real_splits(meta, dataset, data, model.cfg.data_shape)
    if metric == "parzen":
        if name != "mnist" or model.cfg.data_shape != (1, 28, 28):
            raise UsageError("the Parzen protocol is defined for 28x28 MNIST models (Goodfellow et al. 2014)")
        report.info(f"gan-eval: Parzen window, {n} samples, sigma on the last 10000 training images, 10000 test images")
        with report.progress(4 * len(test), "parzen") as update:
            return evaluate_parzen(model, train, test, n=n, seed=seed, progress=lambda k: update(k), autocast=autocast)
    cache = real_feature_cache(data, model.cfg.data_shape, seed) if inception is None else None
    report.info(f"gan-eval: FID with {n} images per set ({name} train as the real set; Inception at 299x299, "
                f"bilinear resize; real features cached in $DLKIT_HOME/cache)")
    with report.progress(3 * n, "fid") as update:
        return evaluate_fid(model, train, test, n, seed, inception, device, batch, cache, ("train", "test"),
                            progress=lambda k: update(k), autocast=autocast)
