"""fit-random-labels on hostile inputs: a replaced run leaves nothing behind, bounded options, wrong files and
tiny images are one sentence each."""

import numpy as np
import pytest
from PIL import Image

from dlkit.core.modelfile import save_model


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


def _mnist(path, n=64, size=8):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, size, size), dtype=np.uint8), y_train=rng.integers(0, 10, n).astype(np.uint8),
             x_test=rng.integers(0, 256, (16, size, size), dtype=np.uint8), y_test=rng.integers(0, 10, 16).astype(np.uint8))
    return path


def _one_line(r, code):
    assert r.exit_code == code, r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], r.stderr


FAST = ["--dataset", "mnist", "--max-epochs", "1", "--batch-size", "32", "--no-figures", "--quiet"]


def test_overwrite_with_fewer_corruptions_leaves_no_earlier_model(invoke, tmp_path):
    data, out = _mnist(tmp_path / "m.npz"), tmp_path / "o"
    r = invoke("fit-random-labels", "--data", data, "-c", "true,random", "--out", out, *FAST[:-2])
    assert r.exit_code == 0, r.stderr
    assert (out / "random.safetensors").exists() and (out / "fig1a_loss.png").exists()
    (out / "notes.txt").write_text("mine")
    r = invoke("fit-random-labels", "--data", data, "-c", "true", "--out", out, "--overwrite", *FAST)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == \
        ["notes.txt", "results.json", "state.pt", "true.safetensors"]


def test_networks_too_big_for_tiny_images_are_one_sentence(invoke, tmp_path):
    for c in "ab":
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (1, 1), (i * 40, 0, 0)).save(tmp_path / "f" / c / f"{i}.png")
    r = invoke("fit-random-labels", "--data", tmp_path / "f", "--arch", "resnet", "-c", "true", "--out", tmp_path / "o",
               *FAST[2:])
    _one_line(r, 1)
    assert "--arch resnet cannot take 1x1 images" in r.stderr and "--image-size" in r.stderr


@pytest.mark.parametrize("opt, value, needle", [
    ("--image-size", "100000", "--image-size 100,000 is over the limit of 512"),
    ("--batch-size", "1000000000", "over the limit of 8,192"),
    ("--seed", "100000000000000000000000", "--seed 100,000,000,000,000,000,000,000 is over the limit"),
])
def test_options_are_bounded_with_a_reason(invoke, tmp_path, opt, value, needle):
    r = invoke("fit-random-labels", "--data", _mnist(tmp_path / "m.npz"), "--out", tmp_path / "o", *FAST, opt, value)
    _one_line(r, 2)
    assert needle in r.stderr


def test_a_model_file_as_data_says_what_it_is(invoke, tmp_path):
    import torch

    save_model(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"task": "gan"})
    r = invoke("fit-random-labels", "--data", tmp_path / "m.safetensors", "--out", tmp_path / "o", *FAST)
    _one_line(r, 1)
    assert "looks like a model file (.safetensors), not a dataset .npz" in r.stderr and "allow_pickle" not in r.stderr


def test_missing_data_is_exit_2_as_everywhere(invoke, tmp_path):
    r = invoke("fit-random-labels", "--data", tmp_path / "none.npz", "--out", tmp_path / "o", *FAST)
    _one_line(r, 2)
    assert "does not exist" in r.stderr
