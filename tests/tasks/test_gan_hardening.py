"""gan-train / gan-sample / gan-eval on hostile inputs: bounded options with reasons, streaming samples, the
output policy, one sentence per failure, no library advice."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.gan.fid import BATCH as INCEPTION_BATCH


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


def _one_line(r, code):
    """Exit ``code`` with one error line, the last on stderr (progress lines before it are fine)."""
    assert r.exit_code == code, r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == lines[-1:], r.stderr


def _mnist(path, n=24, n_test=8):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), y_train=np.arange(n, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), y_test=np.arange(n_test, dtype=np.uint8) % 10)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from dlkit.tasks.gan.train import TrainConfig, train

    out = tmp_path_factory.mktemp("toy")
    train(TrainConfig(dataset="gaussian", steps=5, log_every=5, out=str(out)),
          make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A tiny 28x28 dcgan and its (random) MNIST-like data."""
    from dlkit.tasks.gan.train import TrainConfig, train

    root = tmp_path_factory.mktemp("dig")
    data = _mnist(root / "mnist.npz")
    train(TrainConfig(dataset="mnist", data=str(data), steps=2, batch_size=4, g_width=8, d_width=8, z_dim=8,
                      log_every=1, out=str(root / "run")),
          make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
    return root / "run" / "model.safetensors", data


# ---------------------------------------------------------------- gan-sample
def test_samples_are_produced_lazily(toy):
    from dlkit.tasks.gan import infer

    gan, _ = infer.load_gan(toy)
    t = time.monotonic()
    first = next(infer.iter_samples(gan, 10**9, seed=1))  # would be 4 GB if built at once
    assert first.shape == (500, 1) and time.monotonic() - t < 5
    assert torch.equal(infer.sample(gan, 700, seed=1)[:500], first)  # one seeded stream, batch after batch


def test_toy_numbers_are_streamed_to_stdout(invoke, toy):
    r = invoke("gan-sample", "-m", toy, "-n", "1234", "--seed", "2")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 1234


@pytest.mark.slow
def test_sample_head_1_stops_at_once_in_little_memory(toy):
    cmd = f"set -o pipefail; /usr/bin/time -v {sys.executable} -m dlkit gan-sample -m {toy} -n 10000000 --threads 1 | head -1"
    t = time.monotonic()
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert p.returncode == 141 and len(p.stdout.splitlines()) == 1 and time.monotonic() - t < 60
    rss_kb = int(next(ln for ln in p.stderr.splitlines() if "Maximum resident" in ln).split()[-1])
    assert rss_kb < 1_500_000  # torch alone is ~0.5 GB; 10 million samples built at once would add 2.6 GB


def test_grid_bound_and_the_output_policy(invoke, digits, tmp_path):
    model, _ = digits
    r = invoke("gan-sample", "-m", model, "-n", "100000000", "--grid", tmp_path / "g.png")
    _one_line(r, 2)
    assert "over the limit of 10,000" in r.stderr and "--grid puts every sample into one image" in r.stderr
    assert invoke("gan-sample", "-m", model, "-n", "4", "--grid", tmp_path / "g.png").exit_code == 0
    r = invoke("gan-sample", "-m", model, "-n", "4", "--grid", tmp_path / "g.png")
    _one_line(r, 1)
    assert "already exists; pass --overwrite" in r.stderr
    assert invoke("gan-sample", "-m", model, "-n", "4", "--grid", tmp_path / "g.png", "--overwrite").exit_code == 0


def test_out_folder_refused_then_replaced_whole(invoke, digits, tmp_path):
    model, _ = digits
    out = tmp_path / "many"
    assert invoke("gan-sample", "-m", model, "-n", "5", "-o", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    r = invoke("gan-sample", "-m", model, "-n", "2", "-o", out)
    _one_line(r, 1)
    assert "--overwrite" in r.stderr and len(list(out.glob("*.png"))) == 5
    assert invoke("gan-sample", "-m", model, "-n", "2", "-o", out, "--overwrite").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "notes.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_out_folder_is_one_line(invoke, digits, tmp_path):
    model, _ = digits
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    r = invoke("gan-sample", "-m", model, "-n", "2", "-o", ro / "sub")
    _one_line(r, 1)
    assert "cannot create output folder" in r.stderr


def test_unwritable_out_is_one_line(invoke, digits, tmp_path):
    model, _ = digits
    (tmp_path / "file").write_text("x")
    r = invoke("gan-sample", "-m", model, "-n", "2", "-o", tmp_path / "file" / "sub")  # a file where a folder goes
    _one_line(r, 1)
    assert "cannot create output folder" in r.stderr


# ---------------------------------------------------------------- gan-train
@pytest.mark.parametrize("args, needle", [
    (["--dataset", "gaussian", "--z-dim", "1000000000"], "--z-dim 1,000,000,000 is over the limit of 4,096"),
    (["--dataset", "gaussian", "--g-width", "10000000"], "--g-width 10,000,000 is over the limit of 16,384"),
    (["--dataset", "gaussian", "--batch-size", "1000000000"], "--batch-size 1,000,000,000 is over the limit of 65,536"),
    (["--dataset", "mnist", "--data", "DATA", "--arch", "mlp", "--image-size", "100000"], "over the limit of 512"),
    (["--dataset", "mnist", "--data", "DATA", "--g-width", "2048"], "parameters, over the limit of 50,000,000"),
])
def test_size_options_are_bounded_with_a_reason(invoke, tmp_path, args, needle):
    data = _mnist(tmp_path / "m.npz")
    r = invoke("gan-train", *[str(data) if a == "DATA" else a for a in args], "--steps", "1", "--out", tmp_path / "o")
    _one_line(r, 2)
    assert needle in r.stderr


def test_max_time_is_checked_inside_the_d_steps(tmp_path):
    from dlkit.tasks.gan.train import TrainConfig, train

    t = time.monotonic()
    res = train(TrainConfig(dataset="gaussian", d_steps=10**9, steps=10, max_time=1.0, out=str(tmp_path / "o")),
                make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
    assert time.monotonic() - t < 30 and res.steps == 1 and 0 < res.d_updates < 10**9
    assert (tmp_path / "o" / "model.safetensors").exists()


def test_full_disk_is_one_line(invoke, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    os.symlink("/dev/full", out / "metrics.jsonl")  # every write there: ENOSPC
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "3", "--log-every", "1", "--out", out, "--overwrite")
    _one_line(r, 1)
    assert "No space left on device" in r.stderr and "metrics.jsonl" in r.stderr


@pytest.mark.parametrize("kind, needle", [
    ("model", "looks like a model file (.safetensors), not a dataset .npz"),
    ("pickle", "is a Python pickle, not a dataset .npz"),
    ("objects", "it holds Python objects"),
])
def test_wrong_data_files_say_what_they_are(invoke, toy, tmp_path, kind, needle):
    bad = tmp_path / "bad.npz"
    if kind == "model":
        bad.write_bytes(toy.read_bytes())
    elif kind == "pickle":
        bad.write_bytes(pickle.dumps({"x_train": [1, 2]}))
    else:
        np.savez(bad, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1))
    r = invoke("gan-train", "--dataset", "mnist", "--data", bad, "--steps", "1", "--out", tmp_path / "o")
    _one_line(r, 1)
    assert needle in r.stderr and "allow_pickle" not in r.stderr


def test_missing_or_fifo_data_is_a_usage_error(invoke, tmp_path):
    r = invoke("gan-train", "--dataset", "mnist", "--data", tmp_path / "none.npz", "--out", tmp_path / "o")
    _one_line(r, 2)
    os.mkfifo(tmp_path / "pipe.npz")
    r = invoke("gan-train", "--dataset", "mnist", "--data", tmp_path / "pipe.npz", "--out", tmp_path / "o")
    _one_line(r, 2)
    assert "FIFO" in r.stderr


def test_npz_bomb_is_refused_before_loading(invoke, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (2_000_000, 28, 28)})
            for _ in range(28):
                f.write(b"\0" * (56 << 20))
    assert (tmp_path / "bomb.npz").stat().st_size < 5_000_000
    r = invoke("gan-train", "--dataset", "mnist", "--data", tmp_path / "bomb.npz", "--out", tmp_path / "o")
    _one_line(r, 1)
    assert "1.6 GB once decompressed; dlkit reads at most 1.0 GB" in r.stderr


# ---------------------------------------------------------------- gan-eval
def _script(path, body: str):
    """A TorchScript stand-in for Inception whose forward is ``body`` (scripting needs a source file)."""
    import importlib.util
    import warnings

    src = path.with_suffix(".py")
    src.write_text(f"import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
                   f"        {body}\n")
    spec = importlib.util.spec_from_file_location(f"standin_{abs(hash(body))}", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(mod.M()).save(str(path))
    return path


@pytest.mark.parametrize("body, needle", [
    ("return x.mean()", f"returned () for a batch of {INCEPTION_BATCH} images"),  # the training statistics first
    ("return x.mean(dim=(2, 3)) * float('nan')", "NaN or infinite features"),
])
def test_a_broken_inception_module_is_one_sentence(invoke, digits, tmp_path, body, needle):
    model, data = digits
    incep = _script(tmp_path / "incep.pt", body)
    r = invoke("gan-eval", "-m", model, "--metric", "fid", "--dataset", "mnist", "--data", data, "--inception", incep,
               "-n", "4")
    _one_line(r, 1)
    assert needle in r.stderr


def test_eval_bounds_and_fifo_inception(invoke, digits, tmp_path):
    model, data = digits
    r = invoke("gan-eval", "-m", model, "--metric", "fid", "--dataset", "mnist", "--data", data, "-n", "1000000000")
    _one_line(r, 2)
    assert "-n 1,000,000,000 is over the limit of 50,000: FID at 50,000 generated images" in r.stderr
    os.mkfifo(tmp_path / "incep.pt")
    r = invoke("gan-eval", "-m", model, "--metric", "fid", "--dataset", "mnist", "--data", data,
               "--inception", tmp_path / "incep.pt", "-n", "4")
    _one_line(r, 2)
    assert "FIFO" in r.stderr


def test_real_feature_cache_is_keyed_by_content(tmp_path):
    from dlkit.tasks.gan.evaluate import real_feature_cache

    a, b = _mnist(tmp_path / "a.npz"), tmp_path / "b.npz"
    raw = bytearray(a.read_bytes())
    raw[-200] ^= 0xFF  # same size
    b.write_bytes(bytes(raw))
    st = os.stat(a)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    shape = (1, 28, 28)
    assert real_feature_cache(str(a), shape)("train-4") != real_feature_cache(str(b), shape)("train-4")


def test_download_of_an_unknown_dataset_agrees_with_the_help(invoke, tmp_path):
    r = invoke("gan-train", "--dataset", "fashionmnist", "--download", "--out", tmp_path / "o")
    _one_line(r, 2)
    assert "mnist" in r.stderr and "cifar10" in r.stderr  # the choices the help lists, not "torchvision datasets"
    assert "MNIST or CIFAR-10" in " ".join(invoke("gan-train", "--help").stdout.split())
