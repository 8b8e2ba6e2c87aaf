"""Inputs of `dlkit explain`: image paths, one photo brought to the model's grid, maps brought back to the photo's.

A photo is resized so that its shorter side matches the model's input (squashed when the aspect ratios agree)
and its centre is cropped, as the classifiers were evaluated. :class:`Geometry` remembers how, so that a map
computed on the model's (h, w) grid can be written in the photo's own (H, W) grid: resized back, with zeros
where the crop cut the photo (pixels the model never saw carry no attribution).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from dlkit.core.errors import DataError, UsageError


@dataclass
class Geometry:
    original: tuple[int, int]  # (H, W) of the photo
    resized: tuple[int, int]  # (H', W') after resizing, before the crop
    crop: tuple[int, int]  # (top, left) of the model's window inside the resized photo


def image_inputs(args: list[str], warn, stdin=None) -> list[str]:
    """Files, folders, globs and ``-`` (paths on stdin), in order (:func:`dlkit.vision.inputs.image_inputs`)."""
    from dlkit.vision.inputs import image_inputs as expand

    return expand(args, warn, stdin, what="explain")


def fit_photo(img, input_size) -> tuple[torch.Tensor, Geometry]:
    """A Pillow image -> ((C, h, w) pixels in [0, 1] at the model's size, its :class:`Geometry`)."""
    from PIL import Image

    from dlkit.vision.image import convert, to_tensor

    c, h, w = (int(v) for v in input_size)
    if c not in (1, 3):
        raise DataError(f"the model takes {c}-channel images; only grey (1) or RGB (3) photos can be explained")
    img = convert(img, "L" if c == 1 else "RGB")
    W, H = img.size
    if abs(W / H - w / h) < 1e-6:
        size = (h, w)  # same shape: squash, nothing cropped
    else:
        scale = max(h / H, w / W)  # the shorter side (relative to the model's) fills the window
        size = (max(h, round(H * scale)), max(w, round(W * scale)))
    if (H, W) != size:
        img = img.resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None)
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    img = img.crop((left, top, left + w, top + h))
    return to_tensor(img), Geometry((H, W), size, (top, left))


def to_photo_grid(m: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """A map (h, w) on the model's grid -> (H, W) on the photo's: placed in the crop, resized (bilinear)."""
    import torch.nn.functional as F

    h, w = m.shape
    canvas = torch.zeros(geo.resized, dtype=torch.float32)
    top, left = geo.crop
    canvas[top:top + h, left:left + w] = m.float().cpu()
    if geo.resized == geo.original:
        return canvas
    out = F.interpolate(canvas[None, None], size=geo.original, mode="bilinear", align_corners=False)[0, 0]
    return out.clamp_min(0)


def resolve_target(text: str, classes: list[str]) -> int:
    """A class index (``281``) or name (``tabby``, any case; a unique part of a name also works) -> its index."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        i = int(t)
        if not 0 <= i < len(classes):
            raise UsageError(f"--target {t}: the model has classes 0..{len(classes) - 1}")
        return i
    lower = [c.lower() for c in classes]
    if t.lower() in lower:
        return lower.index(t.lower())
    hits = [i for i, c in enumerate(lower) if t.lower() in c]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        shown = ", ".join(classes[i] for i in hits[:5]) + (" ..." if len(hits) > 5 else "")
        raise UsageError(f"--target {t!r} matches {len(hits)} classes ({shown}); give the full name or the index")
    close = difflib.get_close_matches(t.lower(), lower, n=3)
    hint = f" (did you mean {', '.join(classes[lower.index(c)] for c in close)}?)" if close else ""
    raise UsageError(f"--target {t!r} is not a class of this model{hint}")
