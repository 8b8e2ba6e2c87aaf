"""Writes the tiny image-classification set in this folder: 16x16 greyscale circles, squares and triangles.

``python sample_data/shapes/make_shapes.py`` rewrites ``train/<class>/*.png`` (40 per class) and
``test/<class>/*.png`` (20 per class) the same way every time (seeded): a shape of random size and position,
white on black, with a little noise. Made by the project for the examples of ``fit-random-labels`` and
``adv-attack``; no dataset is needed to run them.
"""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16
CLASSES = ("circle", "square", "triangle")


def shape(kind: str, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    r = rng.uniform(3.5, 6.0)
    cy, cx = rng.uniform(r + 0.5, SIZE - r - 0.5, size=2)
    if kind == "circle":
        mask = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    elif kind == "square":
        mask = (abs(y - cy) <= r * 0.8) & (abs(x - cx) <= r * 0.8)
    else:  # apex up: inside when below the apex and within the widening sides
        mask = (y >= cy - r) & (y <= cy + r) & (abs(x - cx) <= (y - (cy - r)) / 2)
    img = mask * 220.0 + rng.normal(0, 12, size=mask.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    root = Path(__file__).parent
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        for kind in CLASSES:
            out = root / split / kind
            out.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(shape(kind, rng), mode="L").save(out / f"{i:02d}.png", optimize=True)


if __name__ == "__main__":
    main()
