"""Inference: load a model file, upscale an image (tiled, bounded memory), benchmark a folder as the literature does."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dlkit.core.checkpoint import load_model_file
from dlkit.core.errors import DataError, ModelFileError, UsageError
from dlkit.core.imaging import imresize, modcrop, sr_metrics
from dlkit.core.zoo import resolve_model
from dlkit.tasks.superres.data import to_tensor, to_uint8
from dlkit.tasks.superres.model import SRResNet, build_model, config_from_dict

TASK = "superres"


def load_model(spec: str, device: torch.device | str = "cpu") -> tuple[SRResNet, dict]:
    """A model NAME or path -> (eval-mode generator in fp32 on ``device``, metadata)."""
    path = resolve_model(spec, TASK)
    state, meta = load_model_file(path, TASK)
    cfg = config_from_dict(meta.get("config", {}))
    model = build_model(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFileError(f"'{path}' does not match its architecture: {str(e).splitlines()[0]}") from None
    meta = {**meta, "name": Path(path).name.removesuffix(".safetensors"), "path": str(path)}
    return model.to(device).eval(), meta


def check_scale(meta: dict, scale: int | None) -> int:
    trained = int(meta.get("scale", meta.get("config", {}).get("scale", 0)))
    if scale is not None and scale != trained:
        raise UsageError(f"model '{meta.get('name')}' was trained for x{trained}, not x{scale}; "
                         f"use --scale {trained} or a x{scale} model")
    return trained


def load_models(names: list[str], scale: int | None, device="cpu") -> tuple[dict[str, SRResNet], int]:
    """Load each model (``bicubic`` needs none) and check that all have ``scale`` (or one scale between them)."""
    nets, scales = {}, set()
    for n in names:
        if n == "bicubic":
            continue
        m, meta = load_model(n, device)
        scales.add(check_scale(meta, scale))
        nets[meta["path"] if meta["name"] in nets else meta["name"]] = m  # two runs' model.safetensors
    if len(scales) > 1:
        raise UsageError(f"the models have different scales ({sorted(scales)}); compare models of one scale")
    return nets, scales.pop() if scales else (scale or 4)


@torch.no_grad()
def _run(model: torch.nn.Module, lr: torch.Tensor, autocast) -> torch.Tensor:
    with autocast():
        return model(lr).float()


@torch.no_grad()
def upscale_tensor(model: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int = 0, overlap: int = 16,
                   autocast=None) -> torch.Tensor:
    """(1, 3, h, w) -> (1, 3, h*s, w*s), unclamped. With ``tile`` > 0 the LR is cut into tiles of that size,
    each run with ``overlap`` LR pixels of context on every side, and only the tile cores are kept; when
    ``overlap`` covers the receptive field the result equals the untiled one. ``autocast`` is a context
    factory such as ``rt.autocast``."""
    import contextlib

    autocast = autocast or contextlib.nullcontext
    _, c, h, w = lr.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return _run(model, lr, autocast).cpu()
    s = scale
    out = torch.empty(1, c, h * s, w * s, dtype=torch.float32)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            iy0, ix0 = max(0, y0 - overlap), max(0, x0 - overlap)
            iy1, ix1 = min(h, y1 + overlap), min(w, x1 + overlap)
            sr = _run(model, lr[:, :, iy0:iy1, ix0:ix1], autocast).cpu()  # (1, 3, (iy1-iy0)s, (ix1-ix0)s)
            oy, ox = (y0 - iy0) * s, (x0 - ix0) * s
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = sr[:, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
    return out


def upscale(model: torch.nn.Module, lr: np.ndarray, scale: int, tile: int = 0, overlap: int = 16,
            device: torch.device | str = "cpu", autocast=None) -> np.ndarray:
    """(h, w, 3) uint8 -> (h*s, w*s, 3) uint8 with ``model``."""
    t = to_tensor(lr).to(device)
    return to_uint8(upscale_tensor(model, t, scale, tile, overlap, autocast))


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline, exactly as the protocol computes it (MATLAB bicubic, uint8)."""
    return imresize(lr, scale)


def upscale_channel(channel: np.ndarray, scale: int) -> np.ndarray:
    """Alpha (or any single channel) upscaled on its own with bicubic; models see only RGB."""
    return imresize(channel, scale)


# ---------------------------------------------------------------- benchmark protocol
@dataclass
class EvalResult:
    scale: int
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {psnr, ssim}
    per_image: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # image -> method -> (psnr, ssim)
    images: int = 0


def benchmark_images(folder: str | Path, warn=None) -> list[tuple[str, np.ndarray]]:
    """The HR images of a benchmark folder; unreadable files are skipped with a warning (the count is printed)."""
    from dlkit.tasks.superres.data import read_hr_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--eval expects a folder of HR images; '{folder}' is not a folder")
    return read_hr_images(folder, warn=warn)


def evaluate(images: list[tuple[str, np.ndarray]], scale: int, models: dict[str, torch.nn.Module] | None = None,
             tile: int = 0, device: torch.device | str = "cpu", progress=None) -> EvalResult:
    """PSNR/SSIM on Y (BT.601), ``scale`` px shaved, HR mod-cropped, LR by MATLAB bicubic; bicubic first."""
    models = models or {}
    res = EvalResult(scale=scale, images=len(images))
    sums: dict[str, list[float]] = {}
    for name, hr in images:
        hr = modcrop(hr, scale)
        lr = imresize(hr, 1 / scale)
        outs = {"bicubic": bicubic(lr, scale)}
        for mname, model in models.items():
            outs[mname] = upscale(model, lr, scale, tile=tile, device=device)
        res.per_image[Path(name).stem] = {}
        for mname, sr in outs.items():
            p, s = sr_metrics(sr, hr, scale)
            res.per_image[Path(name).stem][mname] = (p, s)
            acc = sums.setdefault(mname, [0.0, 0.0])
            acc[0] += p
            acc[1] += s
        if progress:
            progress(1)
    for mname, (p, s) in sums.items():
        res.rows[mname] = {"psnr": p / len(images), "ssim": s / len(images)}
    return res


# ---------------------------------------------------------------- whole images, any mode
def split_modes(im, warn=None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """A Pillow image -> (RGB uint8, alpha uint8 or None, output mode). Greyscale stays greyscale, alpha is kept;
    CMYK becomes RGB, 16-bit is scaled to 8 bits and palettes are expanded (each with a warning)."""
    from dlkit.tasks.superres.data import to_rgb_uint8

    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        if warn:
            warn(f"{mode} image: scaled to 8 bits per channel before upscaling; the output is 8-bit")
        if mode == "F":
            im = im.convert("L")
        return to_rgb_uint8(im), None, "L"
    if mode == "CMYK":
        if warn:
            warn("CMYK image: converted to RGB; the output is RGB")
        return np.asarray(im.convert("RGB")), None, "RGB"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(im.getchannel("A"))
        out_mode = "LA" if mode in ("LA", "La") else "RGBA"
        return np.asarray(im.convert("RGB")), alpha, out_mode
    if mode in ("L", "1"):
        return np.asarray(im.convert("RGB")), None, "L"
    return np.asarray(im.convert("RGB")), None, "RGB"


def merge_modes(rgb: np.ndarray, alpha: np.ndarray | None, mode: str):
    """Inverse of :func:`split_modes` on the upscaled arrays."""
    from PIL import Image

    out = Image.fromarray(rgb, "RGB")
    if mode in ("L", "LA"):
        out = out.convert("L")
    if alpha is not None:
        out = out.convert("LA" if mode == "LA" else "RGBA")
        out.putalpha(Image.fromarray(alpha, "L"))
    return out


def upscale_image(im, model: torch.nn.Module | None, scale: int, tile: int = 0, overlap: int = 16,
                  device: torch.device | str = "cpu", warn=None, autocast=None):
    """Upscale a Pillow image with ``model`` (None: the bicubic baseline); alpha is upscaled separately with bicubic."""
    rgb, alpha, mode = split_modes(im, warn)
    sr = bicubic(rgb, scale) if model is None else upscale(model, rgb, scale, tile, overlap, device, autocast)
    a = upscale_channel(alpha, scale) if alpha is not None else None
    return merge_modes(sr, a, mode)


# ---------------------------------------------------------------- files and folders
@dataclass
class FileResult:
    input: str
    output: str | None = None
    error: str | None = None
    size: tuple[int, int] | None = None  # output (W, H)
    seconds: float = 0.0


def collect_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders expand to their image files (sorted, recursive, hidden files skipped)."""
    from dlkit.tasks.superres.data import IMAGE_SUFFIXES

    files: list[Path] = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise DataError(f"folder '{p}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(p)
    return files


def output_path(src: Path, out: Path | None, single: bool, scale: int, base: Path | None = None) -> Path:
    """A single file goes to ``out`` (or <stem>_x<scale><suffix> beside it); many go into the folder ``out``."""
    if single and (out is None or out.suffix):
        return out if out is not None else src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    if out is None:
        return src.with_name(f"{src.stem}_x{scale}{src.suffix}")
    rel = src.relative_to(base) if base is not None and src.is_relative_to(base) else Path(src.name)
    return out / rel


def upscale_files(inputs: list[Path], out: Path | None, model, scale: int, tile: int = 0, overlap: int = 16,
                  device="cpu", overwrite: bool = False, warn=None, on_result=None, autocast=None) -> list[FileResult]:
    """Upscale every input; a bad file is reported in its result and the others still go through."""
    import time

    from dlkit.core.errors import DlkitError
    from dlkit.core.io import ensure_can_write, load_image, save_image

    single = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    base = Path(inputs[0]) if len(inputs) == 1 and Path(inputs[0]).is_dir() else None
    results = []
    for src in collect_inputs(inputs):
        res = FileResult(str(src))
        t0 = time.perf_counter()
        try:
            dst = output_path(src, out, single, scale, base)
            ensure_can_write(dst, [src], overwrite)
            im = load_image(src, mode=None)
            say = (lambda m, s=src: warn(f"{s}: {m}")) if warn else None
            sr = upscale_image(im, model, scale, tile, overlap, device, say, autocast)
            save_image(sr, dst)
            res.output, res.size = str(dst), sr.size
        except DlkitError as e:
            if single:
                raise  # one file: its own error and exit code
            res.error = str(e)
        res.seconds = time.perf_counter() - t0
        results.append(res)
        if on_result:
            on_result(res)
    return results


def compare(models: dict, scale: int, panel: Path, lr_path: Path | None = None, hr_path: Path | None = None,
            tile: int = 0, device="cpu", warn=None) -> dict:
    """The lecture's panel: bicubic | each of ``models`` (name -> network) | original. With ``hr_path`` the LR is
    the protocol's (or ``lr_path`` if given) and PSNR/SSIM are shown under each upscaled image."""
    from dlkit.core.io import load_image
    from dlkit.tasks.superres.panel import write_panel

    hr = None
    if hr_path is not None:
        hr = modcrop(split_modes(load_image(hr_path, mode=None), warn)[0], scale)
    if lr_path is not None:
        lr = split_modes(load_image(lr_path, mode=None), warn)[0]
    elif hr is not None:
        lr = imresize(hr, 1 / scale)
    else:
        raise UsageError("--compare needs an input image or --hr")
    if hr is not None and hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise UsageError(f"--hr is {hr.shape[1]}x{hr.shape[0]} but the input x{scale} is "
                         f"{lr.shape[1] * scale}x{lr.shape[0] * scale}; pass the matching original")
    outs = [("bicubic", bicubic(lr, scale))]
    outs += [(name, upscale(net, lr, scale, tile, device=device)) for name, net in models.items()]
    rows, metrics = [], {}
    for title, img in outs:
        m = sr_metrics(img, hr, scale) if hr is not None else None
        rows.append((title, img, m))
        if m is not None:
            metrics[title] = {"psnr": m[0], "ssim": m[1]}
    if hr is not None:
        rows.append(("original", hr, None))
    write_panel(panel, rows, scale)
    return {"panel": str(panel), "metrics": metrics}
