"""The dataset readers on crafted files: the decode cache follows content, containers are read with caps."""

import os
import zipfile

import numpy as np
import pytest
from test_datasets import make_cifar, make_mnist

from dlkit.core.errors import DataError
from dlkit.vision.datasets import load_cifar10, load_image_folder, load_mnist


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


def test_cifar_cache_is_keyed_by_content_not_size_and_mtime(tmp_path):
    (a, _), b = make_cifar(tmp_path / "a.npz"), tmp_path / "b.npz"
    d = dict(np.load(a))
    first = load_cifar10(a, "train")
    assert any((tmp_path / "home" / "cache").glob("cifar10-train-*.npy"))
    d["train_jpeg"] = d["train_jpeg"].copy()
    # another photo of the same byte length: swap two images of equal size
    off = d["train_offsets"]
    sizes = np.diff(off)
    i, j = next((i, j) for i in range(len(sizes)) for j in range(i + 1, len(sizes)) if sizes[i] == sizes[j])
    bi, bj = d["train_jpeg"][off[i]:off[i + 1]].copy(), d["train_jpeg"][off[j]:off[j + 1]].copy()
    d["train_jpeg"][off[i]:off[i + 1]], d["train_jpeg"][off[j]:off[j + 1]] = bj, bi
    np.savez(b, **d)
    assert b.stat().st_size == a.stat().st_size
    st = os.stat(a)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = load_cifar10(b, "train")
    assert (second.images[i] == first.images[j]).all() and not (second.images[i] == first.images[i]).all()


def test_empty_or_bad_class_names_are_refused(tmp_path):
    p, _ = make_cifar(tmp_path / "c.npz")
    d = dict(np.load(p))
    d["class_names"] = np.array([], dtype="<U1")
    np.savez(p, **d)
    with pytest.raises(DataError, match="class_names must list at least two class names") as e:
        load_cifar10(p, "train", cache=False)
    assert "0..-1" not in str(e.value)


def test_mnist_member_bomb_and_zero_sized_images(tmp_path):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("x_train", "y_train", "x_test", "y_test"):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                n = 1_500_000_000 if name == "x_train" else 4
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n,)})
                for _ in range(n // (64 << 20)):
                    f.write(b"\0" * (64 << 20))
                f.write(b"\0" * (n % (64 << 20)))
    assert bomb.stat().st_size < 3_000_000
    with pytest.raises(DataError, match="once decompressed; dlkit reads at most 1.0 GB"):
        load_mnist(bomb)
    zero = tmp_path / "zero.npz"
    np.savez(zero, x_train=np.zeros((3, 0, 28), np.uint8), y_train=np.zeros(3, np.uint8),
             x_test=np.zeros((1, 28, 28), np.uint8), y_test=np.zeros(1, np.uint8))
    with pytest.raises(DataError, match="at least one image"):
        load_mnist(zero)
    m = make_mnist(tmp_path / "m.npz")
    assert len(load_mnist(m)) == 20


def test_fifo_data_is_refused(tmp_path):
    os.mkfifo(tmp_path / "p.npz")
    with pytest.raises(DataError, match="FIFO") as e:
        load_mnist(tmp_path / "p.npz")
    assert e.value.exit_code == 2


def test_image_folder_decoded_size_is_capped(tmp_path, monkeypatch):
    from PIL import Image

    import dlkit.vision.datasets as ds

    monkeypatch.setattr(ds, "DECODED_LIMIT", 10_000)
    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.new("RGB", (40, 40)).save(tmp_path / c / f"{i}.png")
    with pytest.raises(DataError, match="take more than"):
        load_image_folder(tmp_path)
