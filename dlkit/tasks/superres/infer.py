"""Inference: load a model file, upscale an image (tiled automatically, bounded memory), benchmark a folder.

Every function takes one :class:`dlkit.core.runtime.Runtime` (device and precision) from the command.
Images are decoded by :mod:`dlkit.vision.image` (EXIF orientation, modes, size refused before decoding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from dlkit.core.errors import DataError, UsageError
from dlkit.core.runtime import Runtime
from dlkit.tasks.superres.data import to_tensor, to_uint8
from dlkit.tasks.superres.model import SRConfig, SRResNet, build_model
from dlkit.tasks.superres.paths import check_out, collect_inputs, is_single, output_path
from dlkit.tasks.superres.protocol import check_size, imresize, modcrop, sr_metrics

from dlkit.tasks.superres import DEFAULT_MAX_PIXELS

TASK = "superres"
TILE_BUDGET_MAX = 512 * 2**20  # bytes of activations per tile on a CPU (the rest: output, input, torch)


def _cpu_runtime() -> Runtime:
    """fp32 on the CPU, for library callers that pass no runtime (threads and RNGs left as they are)."""
    return Runtime(torch.device("cpu"), "fp32")


# ---------------------------------------------------------------- model files
def model_config(meta: dict) -> SRConfig:
    """The generator's config from a model file's metadata, every field type-checked (one-line errors)."""
    from dlkit.core.config import config_from_dict

    cfg = config_from_dict(SRConfig, meta.get("config"), "config")
    if isinstance(cfg.rgb_mean, list):
        cfg.rgb_mean = tuple(cfg.rgb_mean)
    return cfg


def load_model(spec: str, device: torch.device | str = "cpu") -> tuple[SRResNet, dict]:
    """A model NAME or path -> (eval-mode generator in fp32 on ``device``, metadata); the config is checked
    against the stored tensors before anything large is built (:func:`dlkit.core.loader.load_model`)."""
    from dlkit.core.loader import load_model as load

    return load(spec, TASK, lambda meta: build_model(model_config(meta)), device)


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


# ---------------------------------------------------------------- tiles and memory
def context_pixels(model: torch.nn.Module) -> int:
    """LR pixels of context one output pixel depends on (the receptive field's radius): with at least this
    much overlap, tiled inference equals whole-image inference (BatchNorm in eval mode is per pixel)."""
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, SRConfig):
        return 16
    s, k = cfg.scale, cfg.kernel // 2
    ups = [2] * (s.bit_length() - 1) if s in (2, 4) else [3]
    radius, res = k + 2 * cfg.n_blocks + 1, 1  # head, two 3x3 convs per block, body tail (LR pixels)
    for r in ups:  # a 3x3 conv before each pixel shuffle, at the resolution reached so far
        radius += 1 / res
        res *= r
    radius += k / s  # the tail conv at HR resolution
    return int(math.ceil(radius))


def bytes_per_pixel(model: torch.nn.Module, scale: int) -> int:
    """Peak activation bytes per LR pixel of one forward pass (fp32): measured on SRResNet as about three
    tensors of C x scale^2 channels alive around the last pixel shuffle, plus the LR-resolution features."""
    cfg = getattr(model, "cfg", None)
    c = cfg.channels if isinstance(cfg, SRConfig) else 64
    return 4 * c * (3 * scale * scale + 8)


def available_memory(device: torch.device) -> int:
    """Free memory for activations: CUDA's free memory, else the OS's available memory (cgroup limit too)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:  # a container's limit is what the kernel enforces
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            avail = min(avail or 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return avail if avail and avail > 0 else 2 * 2**30


def auto_tile(model: torch.nn.Module, h: int, w: int, scale: int, device: torch.device, overlap: int,
              budget: int | None = None) -> int:
    """The LR tile side for an h x w input: 0 (whole image) when it fits the memory budget, else the largest
    tile (plus its overlap) that does. The budget is a quarter of the free memory, at most
    :data:`TILE_BUDGET_MAX` on a CPU (half the free memory on a GPU)."""
    if budget is None:
        free = available_memory(device)
        budget = free // 2 if device.type == "cuda" else min(free // 4, TILE_BUDGET_MAX)
    bpp = bytes_per_pixel(model, scale)
    if h * w * bpp <= budget:
        return 0
    side = int(math.sqrt(budget / bpp)) - 2 * overlap
    return max(32, side - side % 8)


def tiles(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int, int, int, int, int, int, int]]:
    """(y0, y1, x0, x1) cores of ``tile`` px covering h x w, each with its input window (iy0, iy1, ix0, ix1)
    extended by ``overlap`` on every side; tile 0 means one tile, the whole image."""
    if tile <= 0 or (h <= tile and w <= tile):
        return [(0, h, 0, w, 0, h, 0, w)]
    out = []
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            out.append((y0, y1, x0, x1, max(0, y0 - overlap), min(h, y1 + overlap), max(0, x0 - overlap),
                        min(w, x1 + overlap)))
    return out


@torch.no_grad()
def _tile_outputs(model: torch.nn.Module, lr: torch.Tensor, scale: int, rt: Runtime, tile: int | None,
                  overlap: int | None, progress=None) -> Iterator[tuple[tuple[slice, slice], torch.Tensor]]:
    """Yield (HR slices, (3, th*s, tw*s) float CPU tensor) for each tile core of ``lr`` (1, 3, h, w)."""
    _, _, h, w = lr.shape
    s = scale
    overlap = context_pixels(model) if overlap is None else overlap
    if tile is None:
        tile = auto_tile(model, h, w, s, rt.device, overlap)
    parts = tiles(h, w, tile, overlap)
    bar = progress(len(parts)) if (progress is not None and len(parts) > 1) else None
    update = bar.__enter__() if bar is not None else None
    try:
        for y0, y1, x0, x1, iy0, iy1, ix0, ix1 in parts:
            with rt.autocast():
                sr = model(lr[:, :, iy0:iy1, ix0:ix1].to(rt.device)).float()  # (1, 3, (iy1-iy0)s, (ix1-ix0)s)
            oy, ox = (y0 - iy0) * s, (x0 - ix0) * s
            core = sr[0, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s].cpu()
            del sr
            yield (slice(y0 * s, y1 * s), slice(x0 * s, x1 * s)), core
            if update is not None:
                update(1)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def upscale_tensor(model: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int | None = 0,
                   overlap: int | None = None, rt: Runtime | None = None) -> torch.Tensor:
    """(1, 3, h, w) -> (1, 3, h*s, w*s) float, unclamped. ``tile`` > 0 cuts the LR into tiles of that side,
    each run with ``overlap`` LR pixels of context (default: the receptive field, so the result equals the
    untiled one); None chooses the tile from the free memory."""
    rt = rt or _cpu_runtime()
    _, c, h, w = lr.shape
    out = torch.empty(1, c, h * scale, w * scale, dtype=torch.float32)
    for (ys, xs), core in _tile_outputs(model, lr, scale, rt, tile, overlap):
        out[0, :, ys, xs] = core
    return out


def upscale(model: torch.nn.Module, lr: np.ndarray, scale: int, rt: Runtime | None = None, tile: int | None = None,
            overlap: int | None = None, progress=None) -> np.ndarray:
    """(h, w, 3) uint8 -> (h*s, w*s, 3) uint8 with ``model``. Tiles are quantised into the uint8 output as
    they come, so memory is the uint8 output plus one tile's activations, whatever the image size.
    ``progress(total)`` returns a context yielding ``update`` (e.g. ``report.progress``), used when there
    are several tiles."""
    rt = rt or _cpu_runtime()
    h, w = lr.shape[:2]
    out = np.empty((h * scale, w * scale, 3), dtype=np.uint8)
    for (ys, xs), core in _tile_outputs(model, to_tensor(lr), scale, rt, tile, overlap, progress):
        out[ys, xs] = to_uint8(core)
    return out


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The baseline, exactly as the protocol computes it (MATLAB bicubic, uint8)."""
    return imresize(lr, scale)


# ---------------------------------------------------------------- benchmark protocol
@dataclass
class EvalResult:
    scale: int
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> {psnr, ssim}
    per_image: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # image -> method -> (psnr, ssim)
    images: int = 0


def benchmark_images(folder: str | Path, report=None, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """(images, outcome): the HR images of a benchmark folder; unreadable files are warned and skipped."""
    from dlkit.tasks.superres.data import read_hr_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--eval expects a folder of HR images; '{folder}' is not a folder")
    return read_hr_images(folder, report, max_pixels=max_pixels)


def evaluate_image(hr: np.ndarray, scale: int, models: dict[str, torch.nn.Module], rt: Runtime | None = None,
                   tile: int | None = None, overlap: int | None = None) -> dict[str, tuple[float, float]]:
    """method -> (PSNR, SSIM) on Y (BT.601), ``scale`` px shaved, HR mod-cropped, LR by MATLAB bicubic."""
    check_size(hr.shape, scale)
    hr = modcrop(hr, scale)
    lr = imresize(hr, 1 / scale)
    out = {"bicubic": sr_metrics(bicubic(lr, scale), hr, scale)}
    for name, model in models.items():
        out[name] = sr_metrics(upscale(model, lr, scale, rt, tile, overlap), hr, scale)
    return out


def evaluate(images: list[tuple[str, np.ndarray]], scale: int, models: dict[str, torch.nn.Module] | None = None,
             rt: Runtime | None = None, tile: int | None = None, overlap: int | None = None, progress=None,
             report=None):
    """Benchmark ``images``; an image that cannot be measured (too small) is a warning and is left out of the
    means (:func:`dlkit.core.batch.run_each`). Returns (EvalResult, BatchOutcome)."""
    from dlkit.core.batch import run_each
    from dlkit.core.report import Reporter

    models = models or {}
    res = EvalResult(scale=scale)

    def one(item):
        name, hr = item
        res.per_image[Path(name).stem] = evaluate_image(hr, scale, models, rt, tile, overlap)

    outcome = run_each(images, one, report or Reporter(quiet=True), name=lambda it: it[0], what="images",
                       progress=progress)
    res.images = len(res.per_image)
    for mname in ["bicubic", *models]:
        vals = [m[mname] for m in res.per_image.values()]
        if vals:
            res.rows[mname] = {"psnr": float(np.mean([v[0] for v in vals])), "ssim": float(np.mean([v[1] for v in vals]))}
    return res, outcome


# ---------------------------------------------------------------- whole images, any mode
def split_modes(im, warn=None) -> tuple[np.ndarray, np.ndarray | None, str]:
    """A Pillow image -> (RGB uint8, alpha uint8 or None, output mode). Greyscale stays greyscale, alpha is kept;
    CMYK becomes RGB, 16-bit is scaled to 8 bits and palettes are expanded (each with a warning)."""
    from dlkit.vision.image import convert

    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        if warn:
            warn(f"{mode} image: scaled to 8 bits per channel before upscaling; the output is 8-bit")
        return np.asarray(convert(im, "RGB")), None, "L"
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


def upscale_image(im, model: torch.nn.Module | None, scale: int, rt: Runtime | None = None, tile: int | None = None,
                  overlap: int | None = None, warn=None, progress=None):
    """Upscale a Pillow image with ``model`` (None: the bicubic baseline); alpha is upscaled separately with
    bicubic; the EXIF block (orientation already applied by the decoder) is carried over."""
    rgb, alpha, mode = split_modes(im, warn)
    sr = bicubic(rgb, scale) if model is None else upscale(model, rgb, scale, rt, tile, overlap, progress)
    del rgb
    a = imresize(alpha, scale) if alpha is not None else None
    out = merge_modes(sr, a, mode)
    if im.info.get("exif"):
        out.info["exif"] = im.info["exif"]
    return out


# ---------------------------------------------------------------- files and folders
@dataclass
class FileResult:
    input: str
    output: str | None = None
    size: tuple[int, int] | None = None  # output (W, H)
    seconds: float = 0.0


def upscale_files(inputs: list[Path], out: Path | None, model, scale: int, rt: Runtime | None = None,
                  tile: int | None = None, overlap: int | None = None, overwrite: bool = False, report=None,
                  on_result: Callable[[FileResult], None] | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  progress=None):
    """Upscale every input under the batch policy (:func:`dlkit.core.batch.run_each`): a bad file is a warning
    (a JSON record with ``--json``) and the others still go through; one input raises its own error.
    Returns the :class:`~dlkit.core.batch.BatchOutcome` (its ``results`` are :class:`FileResult`)."""
    import time

    from dlkit.core.batch import BatchOutcome, run_each
    from dlkit.core.io import ensure_can_write
    from dlkit.core.report import Reporter
    from dlkit.vision.image import open_image, save_image

    report = report or Reporter(quiet=True)
    check_out(inputs, out)
    single = is_single(inputs)
    base = Path(inputs[0]) if len(inputs) == 1 and Path(inputs[0]).is_dir() else None

    def one(src: Path) -> FileResult:
        t0 = time.perf_counter()
        dst = output_path(src, out, single, scale, base)
        ensure_can_write(dst, [src], overwrite)
        im = open_image(src, mode=None, max_pixels=max_pixels)
        bar = (lambda total: progress(total, f"{src.name} tiles")) if progress is not None else None
        sr = upscale_image(im, model, scale, rt, tile, overlap, lambda m: report.warn(f"{src}: {m}"), bar)
        del im
        save_image(sr, dst)
        res = FileResult(str(src), str(dst), sr.size, time.perf_counter() - t0)
        if on_result:
            on_result(res)
        return res

    files = collect_inputs(inputs)
    if single:  # one input: its failure is the command's own error (one line, its exit code)
        return BatchOutcome(total=1, results=[one(files[0])], what="images")
    return run_each(files, one, report, name=str, what="images")
