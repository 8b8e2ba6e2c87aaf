"""The evaluation protocol: MATLAB-compatible bicubic imresize, BT.601 luma, PSNR/SSIM (no shared data)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlkit.tasks.superres.protocol import imresize, modcrop, psnr, resize_weights, rgb_to_y, shave, sr_metrics, ssim


def test_upscale_weights_match_keys_cubic_by_hand():
    # x2 upscaling, first output pixel: centre u = 0.75 (1-based input coords); distances 1.75, 0.75, 0.25, 1.25
    # give Keys (a = -0.5) weights -0.0234375, 0.2265625, 0.8671875, -0.0703125; MATLAB mirrors index -1 -> 1, 0 -> 0.
    w, idx = resize_weights(4, 8, 2.0)
    row = dict()
    for wi, ii in zip(w[0], idx[0]):
        row[int(ii)] = row.get(int(ii), 0.0) + wi
    assert row[0] == pytest.approx(0.2265625 + 0.8671875)
    assert row[1] == pytest.approx(-0.0234375 - 0.0703125)
    # an interior pixel (u = 2.25): distances 1.25, 0.25, 0.75, 1.75 to inputs 1..4 (1-based); the
    # always-zero outer taps of MATLAB's ceil(4) + 2 = 6 are dropped
    assert w.shape == (8, 4)
    np.testing.assert_array_equal(idx[3], [0, 1, 2, 3])
    np.testing.assert_allclose(w[3], [-0.0703125, 0.8671875, 0.2265625, -0.0234375])


def test_antialiased_downscale_kernel_is_stretched():
    # shrinking by 4: kernel width 16 -> 18 taps, minus MATLAB's all-zero columns; each row sums to 1, symmetric
    w, idx = resize_weights(64, 16, 0.25)
    assert w.shape[1] == 16
    np.testing.assert_allclose(w.sum(1), 1.0)
    interior = w[8]
    np.testing.assert_allclose(interior, interior[::-1], atol=1e-12)
    # without antialiasing only 4 taps are non-zero (a subsampling filter)
    w2, _ = resize_weights(64, 16, 0.25, antialias=False)
    assert (np.abs(w2) > 1e-12).sum(1).max() == 4


def test_linear_ramp_is_reproduced_away_from_borders():
    # Keys' cubic reproduces polynomials up to degree 2, so a ramp resampled anywhere is the ramp at u
    x = np.tile(np.arange(1, 41, dtype=np.float64), (3, 1))  # (3, 40), value = 1-based column index
    down = imresize(x, size=(3, 20))
    u = np.arange(1, 21) * 2 - 0.5  # output centres in input coordinates
    np.testing.assert_allclose(down[1, 3:-3], u[3:-3], atol=1e-9)
    up = imresize(x, size=(3, 80))
    u = np.arange(1, 81) / 2 + 0.25
    np.testing.assert_allclose(up[1, 6:-6], u[6:-6], atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.sampled_from([2, 3, 4]), st.integers(0, 255))
def test_constant_images_stay_constant_and_sizes_are_ceil(h, w, s, v):
    img = np.full((h, w, 3), v, dtype=np.uint8)
    up = imresize(img, s)
    assert up.shape == (h * s, w * s, 3) and up.dtype == np.uint8
    assert (up == v).all()
    down = imresize(img, 1 / s)
    assert down.shape == (int(np.ceil(h / s)), int(np.ceil(w / s)), 3)
    assert (down == v).all()


def test_uint8_is_rounded_per_pass_and_float_is_not():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (17, 23, 3)).astype(np.uint8)
    a = imresize(img, 1 / 4)
    b = imresize(img.astype(np.float64), 1 / 4)
    assert a.dtype == np.uint8 and b.dtype == np.float64
    assert np.abs(a.astype(np.float64) - b).max() <= 1.0
    assert not np.allclose(b, np.round(b))


def test_rgb_to_y_is_matlab_rgb2ycbcr():
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)
    assert rgb_to_y(np.array([[[1.0, 0.0, 0.0]]]))[0, 0] == pytest.approx(16 + 65.481)


def test_metrics_crop_and_shave():
    assert modcrop(np.zeros((10, 13, 3)), 4).shape == (8, 12, 3)
    assert shave(np.zeros((10, 12)), 4).shape == (2, 4)
    a = np.full((16, 16), 100.0)
    assert psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2))
    assert ssim(a, a) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
    sr = hr.copy()
    sr[:4] = 0  # damage only the border that is shaved
    assert sr_metrics(sr, hr, 4)[0] == float("inf")
