"""Sample grids through torchvision.utils.make_grid, written atomically."""

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.vision.grid import make_grid, save_grid


def test_grid_layout_and_values(tmp_path):
    imgs = torch.zeros(6, 3, 8, 8)
    imgs[1] = 1.0
    p = save_grid(imgs, tmp_path / "g.png", nrow=3, padding=2)
    im = np.asarray(Image.open(p))
    assert im.shape == (2 + 2 * 10, 2 + 3 * 10, 3)  # 2 rows x 3 columns of 8 px + 2 px padding
    assert im[2:10, 12:20].min() == 255 and im[2:10, 2:10].max() == 0  # image 1 white, image 0 black
    assert not [q for q in tmp_path.iterdir() if ".tmp" in q.name]


def test_default_is_square_and_grey_and_uint8_are_accepted(tmp_path):
    g = make_grid(torch.rand(9, 1, 4, 4), padding=0)
    assert g.shape == (3, 12, 12)
    g = make_grid(torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8), padding=0)
    assert g.shape == (3, 4, 8) and g.max() <= 1
    assert make_grid(torch.rand(4, 5, 5)).shape[0] == 3  # (N, H, W)
    save_grid(torch.rand(3, 1, 4, 4) * 3 - 1, tmp_path / "clamped.png")  # out of range: clamped, not an error
    with pytest.raises(ValueError, match="N >= 1"):
        make_grid(torch.rand(0, 3, 4, 4))
