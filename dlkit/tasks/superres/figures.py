"""The lecture's comparison panel: bicubic | model(s) | original, whole images above and a zoomed crop below.

At thumbnail size the methods look alike; the lecture's figure is a crop, so the second row enlarges the
same region of every image (chosen where the image has the most detail, or given as ``crop``). PSNR/SSIM
(Y, ``scale`` px shaved) appear under an image only when the original was given.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dlkit.core.atomic import atomic_write_bytes
from dlkit.core.errors import UsageError
from dlkit.tasks.superres import DEFAULT_MAX_PIXELS, infer
from dlkit.tasks.superres.protocol import check_size, imresize, modcrop, sr_metrics


def pick_crop(img: np.ndarray, side: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the ``side`` x ``side`` window of ``img`` (H, W, 3) with the most detail (gradient energy)."""
    k = -(-max(img.shape[:2]) // 800)  # search on every k-th pixel: cheap for any image size
    if k > 1:
        x, y, cw, ch = pick_crop(img[::k, ::k], max(1, side // k))
        h, w = img.shape[:2]
        side = min(side, h, w)
        return min(x * k, w - side), min(y * k, h - side), side, side
    h, w = img.shape[:2]
    side = min(side, h, w)
    g = img.astype(np.float32).mean(axis=2)
    e = np.zeros_like(g)
    e[:, 1:] += np.abs(np.diff(g, axis=1))
    e[1:, :] += np.abs(np.diff(g, axis=0))
    c = np.pad(e, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # integral image: any window's sum in O(1)
    step = max(1, side // 4)
    best, box = -1.0, (0, 0, side, side)
    for y in range(0, h - side + 1, step):
        for x in range(0, w - side + 1, step):
            total = c[y + side, x + side] - c[y, x + side] - c[y + side, x] + c[y, x]
            if total > best:
                best, box = total, (x, y, side, side)
    return box


def write_panel(path: str | Path, images: list[tuple[str, np.ndarray, tuple[float, float] | None]], scale: int,
                crop: tuple[int, int, int, int] | None = None) -> list[int]:
    """``images``: (title, (H, W, 3) uint8, (psnr, ssim) or None), all of one size. Written atomically as
    PNG/JPEG/PDF by suffix; returns the crop box [x, y, w, h] in output pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fmt = Path(path).suffix.lower().lstrip(".") or "png"
    fmt = "jpeg" if fmt == "jpg" else fmt
    if fmt not in plt.figure().canvas.get_supported_filetypes():
        plt.close("all")
        from dlkit.core.errors import OutputError

        raise OutputError(f"cannot write a panel as '{Path(path).suffix}' (use .png, .jpg, .pdf or .svg)")
    plt.close("all")
    h, w = images[0][1].shape[:2]
    ref = images[-1][1]  # the original when given, else the last model's output
    box = crop or pick_crop(ref, max(8, min(h, w, 1200) // 3))
    x, y, cw, ch = box
    n = len(images)
    has_metrics = any(m is not None for _, _, m in images)
    fig, axes = plt.subplots(2, n, figsize=(4.0 * n, 4.0 * h / w + 4.0 * ch / cw + 1.2), squeeze=False,
                             gridspec_kw={"height_ratios": [h / w, ch / cw]})
    for col, (title, img, metrics) in enumerate(images):
        top, zoom = axes[0][col], axes[1][col]
        k = -(-max(h, w) // 1600)  # whole images are thumbnails: show every k-th pixel (memory); the crop is full
        top.imshow(img[::k, ::k], interpolation="nearest")
        top.add_patch(Rectangle((x / k - 0.5, y / k - 0.5), cw / k, ch / k, fill=False, edgecolor="yellow",
                                linewidth=1.5))
        top.set_title(title, fontsize=12)
        zoom.imshow(img[y : y + ch, x : x + cw], interpolation="nearest")
        zoom.set_xlabel(f"{metrics[0]:.2f} dB / {metrics[1]:.4f}" if metrics is not None else " ", fontsize=11)
        for ax in (top, zoom):
            ax.set_xticks([])
            ax.set_yticks([])
    what = f"PSNR / SSIM on Y, {scale} px shaved" if has_metrics else "no original given, so no PSNR / SSIM"
    fig.suptitle(f"x{scale} super-resolution; below: the yellow box enlarged ({what})", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return [int(v) for v in box]


def compare(models: dict, scale: int, panel: Path, lr_path: Path | None = None, hr_path: Path | None = None,
            rt=None, tile: int | None = None, overlap: int | None = None, warn=None,
            max_pixels: int | None = DEFAULT_MAX_PIXELS, crop: int | None = None) -> dict:
    """The lecture's panel: bicubic | each of ``models`` (name -> network) | original, whole images and a zoomed
    crop row. With ``hr_path`` the LR is the protocol's (or ``lr_path`` if given) and PSNR/SSIM are shown under
    each upscaled image; without it the panel claims no metric."""
    from dlkit.vision.image import open_image

    hr = None
    if hr_path is not None:
        hr = modcrop(infer.split_modes(open_image(hr_path, mode=None, max_pixels=max_pixels), warn)[0], scale)
    if lr_path is not None:
        lr = infer.split_modes(open_image(lr_path, mode=None, max_pixels=max_pixels), warn)[0]
    elif hr is not None:
        lr = imresize(hr, 1 / scale)
    else:
        raise UsageError("--compare needs an input image or --hr")
    if hr is not None and hr.shape[:2] != (lr.shape[0] * scale, lr.shape[1] * scale):
        raise UsageError(f"--hr is {hr.shape[1]}x{hr.shape[0]} but the input x{scale} is "
                         f"{lr.shape[1] * scale}x{lr.shape[0] * scale}; pass the matching original")
    if hr is not None:
        check_size(hr.shape, scale)
    outs = [("bicubic", infer.bicubic(lr, scale))]
    outs += [(name, infer.upscale(net, lr, scale, rt, tile, overlap)) for name, net in models.items()]
    rows, metrics = [], {}
    for title, img in outs:
        m = sr_metrics(img, hr, scale) if hr is not None else None
        rows.append((title, img, m))
        if m is not None:
            metrics[title] = {"psnr": m[0], "ssim": m[1]}
    if hr is not None:
        rows.append(("original", hr, None))
    box = write_panel(panel, rows, scale, crop=crop)
    return {"panel": str(panel), "scale": scale, "metrics": metrics, "crop": box}
