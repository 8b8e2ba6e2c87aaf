"""Dataset readers: MNIST/CIFAR-10 npz files, image folders, and one-line errors for bad input."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.core.errors import DataError
from dlkit.vision.datasets import load_cifar10, load_dataset, load_image_folder, load_mnist


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


def make_mnist(path, n=20):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=np.arange(5, dtype=np.uint8))
    return path


def make_cifar(path, n=12, size=8):
    rng = np.random.default_rng(0)
    imgs = np.broadcast_to(rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8), (n, size, size, 3))  # flat colours
    blobs = []
    for a in imgs:
        b = io.BytesIO()
        Image.fromarray(a).save(b, format="JPEG", quality=95)
        blobs.append(np.frombuffer(b.getvalue(), dtype=np.uint8))
    off = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    buf = np.concatenate(blobs)
    np.savez(path, train_jpeg=buf, train_offsets=off, y_train=np.arange(n, dtype=np.uint8) % 10,
             test_jpeg=buf, test_offsets=off, y_test=np.arange(n, dtype=np.uint8) % 10,
             class_names=np.array([f"c{i}" for i in range(10)]))
    return path, imgs


def test_mnist(tmp_path):
    d = load_mnist(make_mnist(tmp_path / "m.npz"), "train")
    assert d.images.shape == (20, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels[:3].tolist() == [0, 1, 2] and len(d.classes) == 10
    assert len(load_dataset("mnist", "test", tmp_path / "m.npz")) == 5


def test_cifar_jpeg_and_cache(tmp_path):
    path, imgs = make_cifar(tmp_path / "c.npz")
    d = load_cifar10(path, "train")
    assert d.images.shape == (12, 3, 8, 8) and d.classes[1] == "c1"
    assert np.abs(d.images.permute(0, 2, 3, 1).numpy().astype(int) - imgs.astype(int)).max() <= 4  # JPEG q95 of flat colours
    cached = list((tmp_path / "home" / "cache").glob("cifar10-train-*.npy"))
    assert len(cached) == 1
    assert torch.equal(load_cifar10(path, "train").images, d.images)  # from the cache


def test_image_folder(tmp_path):
    for k, name in enumerate(["cat", "dog"]):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10 + i, 12), (k * 200, i * 50, 0)).save(tmp_path / "f" / name / f"{i}.png")
    (tmp_path / "f" / "dog" / "broken.jpg").write_bytes(b"not an image")
    warnings = []
    d = load_image_folder(tmp_path / "f", size=8, warn=warnings.append)
    assert d.classes == ["cat", "dog"] and d.images.shape == (6, 3, 8, 8) and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0]
    with pytest.raises(DataError, match="image size"):
        load_image_folder(tmp_path / "f")


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"), ("text", "is not an .npz file"), ("keys", "missing array"),
    ("noclass", "no class subfolders"), ("emptyclass", "no readable images"), ("offsets", "do not index"),
])
def test_bad_inputs_are_one_line(tmp_path, case, match):
    p = tmp_path / "bad.npz"
    if case == "text":
        p.write_text("hello")
    elif case == "keys":
        np.savez(p, x_train=np.zeros((2, 28, 28), np.uint8))
    elif case == "offsets":
        make_cifar(p)
        d = dict(np.load(p))
        d["train_offsets"] = d["train_offsets"][::-1].copy()
        np.savez(p, **d)
    elif case in ("noclass", "emptyclass"):
        p = tmp_path / "folder"
        p.mkdir()
        Image.new("RGB", (4, 4)).save(p / "loose.png")
        if case == "emptyclass":
            (p / "a").mkdir()
    with pytest.raises(DataError, match=match) as e:
        if case in ("noclass", "emptyclass"):
            load_image_folder(p)
        elif case in ("offsets",):
            load_cifar10(p, "train", cache=False)
        else:
            load_mnist(p, "train")
    assert "\n" not in str(e.value)


def test_load_dataset_needs_data_or_download():
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10", "train")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet", "train")
