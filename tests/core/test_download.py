"""Opt-in downloads: checksums, atomic writes, mirrors, the MNIST/CIFAR-10 conversion, and no network without
the flag. Served from file:// URLs and a local http.server on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import tarfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlkit.core import download as dl
from dlkit.core.errors import DataError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(tmp_path: Path, name: str, data: bytes) -> str:
    src = tmp_path / "server" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return src.as_uri()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_right_checksum_is_written_atomically(tmp_path):
    data = b"To be, or not to be\n" * 10
    f = dl.RemoteFile("input.txt", (served(tmp_path, "a.txt", data),), sha(data), len(data))
    out = dl.fetch(f, tmp_path / "data")
    assert out == tmp_path / "data" / "input.txt"
    assert out.read_bytes() == data
    assert leftovers(tmp_path / "data") == []


def test_wrong_checksum_is_refused_and_nothing_is_kept(tmp_path):
    data = b"not the file you expect"
    f = dl.RemoteFile("input.txt", (served(tmp_path, "a.txt", data),), sha(b"something else"))
    with pytest.raises(DataError, match="input.txt.*SHA-256.*not the expected") as e:
        dl.fetch(f, tmp_path / "data")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "data" / "input.txt").exists()
    assert leftovers(tmp_path / "data") == []


def test_a_stream_longer_than_announced_is_cut_off(tmp_path):
    data = b"x" * 5000
    f = dl.RemoteFile("big.bin", (served(tmp_path, "big.bin", data),), sha(data), size=100)
    with pytest.raises(DataError, match="more than the expected 100 bytes"):
        dl.fetch(f, tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_the_next_mirror_is_tried_and_a_good_file_is_not_fetched_again(tmp_path, monkeypatch):
    data = b"mirror two\n"
    missing = (tmp_path / "nowhere.txt").as_uri()
    f = dl.RemoteFile("m.txt", (missing, served(tmp_path, "m.txt", data)), sha(data))
    assert dl.fetch(f, tmp_path / "data").read_bytes() == data

    def no_network(*a, **k):
        raise AssertionError("a file with the right checksum must not be fetched again")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert dl.fetch(f, tmp_path / "data").read_bytes() == data


def test_every_failing_url_is_named_in_one_line(tmp_path):
    urls = ((tmp_path / "a.txt").as_uri(), (tmp_path / "b.txt").as_uri())
    f = dl.RemoteFile("x.txt", urls, sha(b""))
    with pytest.raises(DataError) as e:
        dl.fetch(f, tmp_path / "data")
    msg = str(e.value)
    assert msg.startswith("could not download x.txt: ") and "a.txt" in msg and "b.txt" in msg and "\n" not in msg


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_right_checksum_accepted_wrong_one_refused(tmp_path, http_server):
    root, base = http_server
    data = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    (root / "input.txt").write_bytes(data)
    good = dl.RemoteFile("input.txt", (f"{base}/input.txt",), sha(data), len(data))
    assert dl.fetch(good, tmp_path / "ok").read_bytes() == data
    bad = dl.RemoteFile("input.txt", (f"{base}/input.txt",), sha(data + b"!"))
    with pytest.raises(DataError, match="not the expected"):
        dl.fetch(bad, tmp_path / "bad")
    assert not (tmp_path / "bad" / "input.txt").exists()
    missing = dl.RemoteFile("gone.txt", (f"{base}/gone.txt",), sha(data))
    with pytest.raises(DataError, match="gone.txt.*HTTP 404"):
        dl.fetch(missing, tmp_path / "missing")


def idx(a: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return gzip.compress(head + a.astype(np.uint8).tobytes())


def registry(tmp_path, monkeypatch, name: str, files: dict[str, bytes]) -> None:
    remote = tuple(dl.RemoteFile(n, (served(tmp_path, n, b),), sha(b)) for n, b in files.items())
    monkeypatch.setitem(dl.DATASETS, name, dl.Dataset(name, "test copy", remote))


def test_mnist_download_flag_fetches_checks_and_loads(tmp_path, monkeypatch):
    from dlkit.vision.datasets import load_dataset

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 256, (3, 28, 28))
    y_tr, y_te = np.array([5, 0, 4, 1, 9]), np.array([7, 2, 1])
    registry(tmp_path, monkeypatch, "mnist", {
        "train-images-idx3-ubyte.gz": idx(x_tr), "train-labels-idx1-ubyte.gz": idx(y_tr),
        "t10k-images-idx3-ubyte.gz": idx(x_te), "t10k-labels-idx1-ubyte.gz": idx(y_te)})
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))
    test = load_dataset("mnist", "test", download=True)
    assert test.images.shape == (3, 1, 28, 28)
    assert np.array_equal(test.images[:, 0].numpy(), x_te) and test.labels.tolist() == [7, 2, 1]
    assert (tmp_path / "home" / "data" / "mnist.npz").is_file()
    assert load_dataset("mnist", "train", download=True).labels.tolist() == [5, 0, 4, 1, 9]


def test_cifar10_binary_release_is_converted_without_pickle(tmp_path, monkeypatch):
    from dlkit.vision.datasets import load_dataset
    from dlkit.vision.download import dataset_npz

    rng = np.random.default_rng(1)

    def batch(labels):
        pix = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
        recs = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], pix.reshape(len(labels), -1)], 1)
        return recs.tobytes(), pix

    buf = io.BytesIO()
    pixels = {}
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, labels in [(f"data_batch_{i}.bin", [i, 9]) for i in range(1, 6)] + [("test_batch.bin", [3, 8])]:
            data, pixels[name] = batch(labels)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    registry(tmp_path, monkeypatch, "cifar10", {"cifar-10-binary.tar.gz": buf.getvalue()})
    npz = dataset_npz("cifar10", tmp_path / "data")
    assert npz == tmp_path / "data" / "cifar10.npz"
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))
    test = load_dataset("cifar10", "test", data=npz)
    assert test.labels.tolist() == [3, 8] and test.images.shape == (2, 3, 32, 32)
    assert np.array_equal(test.images.numpy(), pixels["test_batch.bin"])
    assert load_dataset("cifar10", "train", data=npz).labels.tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]


def test_without_the_flag_nothing_touches_the_network(tmp_path, monkeypatch):
    from dlkit.vision.datasets import load_dataset

    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: calls.append(a))
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))
    for name in ("mnist", "cifar10"):
        with pytest.raises(DataError, match="give --data .* or --download"):
            load_dataset(name, "train")
    assert calls == [] and not (tmp_path / "home" / "data").exists()


def test_download_command(tmp_path, monkeypatch):
    from dlkit.cli import app

    data = b"Tiny text\n"
    registry(tmp_path, monkeypatch, "tinyshakespeare", {"input.txt": data})
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(app, ["download", "tinyshakespeare"])
    out = tmp_path / "home" / "data" / "tinyshakespeare" / "input.txt"
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out) and out.read_bytes() == data
    monkeypatch.setitem(dl.DATASETS, "tinyshakespeare", dl.Dataset("tinyshakespeare", "gone", (
        dl.RemoteFile("input.txt", ((tmp_path / "nowhere").as_uri(),), sha(b"other")),)))
    r = CliRunner().invoke(app, ["download", "tinyshakespeare"])
    assert r.exit_code == 1 and r.stdout == ""
    assert "could not download input.txt" in r.stderr and r.stderr.count("\n") == 1
    r = CliRunner().invoke(app, ["download", "imagenet"])
    assert r.exit_code == 2 and "unknown dataset 'imagenet'" in r.stderr
