"""FID with known answers: the Frechet distance against scipy, exact Gaussian feature sets, the streamed statistics,
the real-statistics cache (hit, and missed when the data file's content changes), and `gan-eval --metric fid` end to
end with a tiny TorchScript stand-in for Inception (the real one is never loaded here)."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.gan import fid as fidlib


def _exact_gaussian(n: int, mu: np.ndarray, cov: np.ndarray, seed: int) -> np.ndarray:
    """n rows whose sample mean is exactly ``mu`` and unbiased sample covariance exactly ``cov``."""
    x = np.random.default_rng(seed).normal(size=(n, len(mu)))
    x -= x.mean(0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T  # whitened: covariance I
    return x @ np.linalg.cholesky(cov).T + mu


def _random_cov(d: int, rng) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def test_frechet_distance_matches_a_direct_scipy_computation():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    for d in (1, 2, 5):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = _random_cov(d, rng), _random_cov(d, rng)
        direct = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real))
        assert math.isclose(fidlib.frechet_distance(mu1, s1, mu2, s2), direct, rel_tol=1e-8)


def test_identical_sets_give_zero_and_gaussians_give_the_closed_form():
    rng = np.random.default_rng(2)
    d = 4
    mu, cov = rng.normal(size=d), _random_cov(d, rng)
    f = _exact_gaussian(300, mu, cov, seed=0)
    assert fidlib.fid_from_features(f, f) < 1e-9
    shift = np.array([1.0, -2.0, 0.5, 3.0])  # same covariance: FID = |shift|^2 exactly
    assert math.isclose(fidlib.fid_from_features(f, f + shift), float(shift @ shift), rel_tol=1e-9)
    # different covariances, both diagonal: |mu1 - mu2|^2 + sum (sd1 - sd2)^2
    sd1, sd2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    g1 = _exact_gaussian(400, np.zeros(d), np.diag(sd1 ** 2), seed=1)
    g2 = _exact_gaussian(400, shift, np.diag(sd2 ** 2), seed=2)
    closed = float(shift @ shift + ((sd1 - sd2) ** 2).sum())
    assert math.isclose(fidlib.fid_from_features(g1, g2), closed, rel_tol=1e-9)


@pytest.mark.parametrize("block", [1, 20, 256])  # a product per update, blocks of two updates, one at the end
def test_streamed_statistics_equal_numpy_on_all_rows(block):
    rng = np.random.default_rng(3)
    f = rng.normal(size=(103, 5)) * 0.01 + 1000.0  # a large common mean: the shifted sums keep the digits
    acc = fidlib.RunningStats(block=block)
    for i in range(0, len(f), 17):
        acc.update(f[i:i + 17])
    mu, cov, n = acc.result()
    assert n == 103
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(f, rowvar=False), rtol=1e-6, atol=1e-12)


class _TinyInception(torch.nn.Module):
    """3x299x299 -> 12 features (2x2 average pooling of the three channels); deterministic, no weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[2] == 299 and x.shape[3] == 299
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 28x28 dcgan, MNIST-like data (60 train, 12 test) and the stand-in Inception."""
    from dlkit.tasks.gan.train import TrainConfig, train

    root = tmp_path_factory.mktemp("fid")
    rng = np.random.default_rng(0)
    data = root / "mnist.npz"
    np.savez(data, x_train=rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), y_train=np.arange(60, dtype=np.uint8) % 10,
             x_test=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8), y_test=np.arange(12, dtype=np.uint8) % 10)
    train(TrainConfig(dataset="mnist", data=str(data), steps=2, batch_size=4, g_width=8, d_width=8, z_dim=8,
                      log_every=1, out=str(root / "run")),
          make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_TinyInception()).save(str(root / "incep.pt"))
    return root / "run" / "model.safetensors", data, root / "incep.pt"


def _eval(invoke, model, data, incep, *more):
    r = invoke("gan-eval", "-m", model, "--metric", "fid", "--dataset", "mnist", "--data", data, "--inception", incep,
               "--json", *more)
    assert r.exit_code == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr


def _same_size_and_mtime_other_content(src, dst):
    with np.load(src) as z:
        arrays = dict(z)
    arrays["x_train"][0, 0, 0] ^= 0xFF  # one pixel of one training image
    np.savez(dst, **arrays)
    st = os.stat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(dst).st_size == st.st_size and dst.read_bytes() != src.read_bytes()


def test_gan_eval_fid_end_to_end_and_the_cache(invoke, tiny, tmp_path, monkeypatch):
    model, data, incep = tiny
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))
    rows, err = _eval(invoke, model, data, incep, "-n", "8", "--batch-size", "5")
    # N generated against ALL 60 training images; the reference: 8 test images against the same statistics
    assert [r["what"] for r in rows] == ["model", "real test vs real train (reference)"]
    assert [r["n"] for r in rows] == [8, 8] and all(r["against"] == "train statistics (60)" for r in rows)
    assert all(math.isfinite(r["fid"]) and r["fid"] >= 0 for r in rows)
    assert rows[0]["fid"] > rows[1]["fid"]  # an untrained generator is further from the data than real test images
    assert "N = 8" in err and "biased upward" in err and "from the cache" not in err
    cached = sorted((tmp_path / "home" / "cache").glob("fid-*.npz"))
    assert len(cached) == 2  # train (all) and the test subset; never the generated set

    again, err = _eval(invoke, model, data, incep, "-n", "8", "--batch-size", "5")
    assert err.count("from the cache") == 2 and again == rows
    assert sorted((tmp_path / "home" / "cache").glob("fid-*.npz")) == cached

    other = tmp_path / "mnist.npz"  # the same name, size and mtime, other bytes: the cache must not be used
    _same_size_and_mtime_other_content(data, other)
    changed, err = _eval(invoke, model, other, incep, "-n", "8", "--batch-size", "5")
    assert "from the cache" not in err and changed[0]["fid"] != rows[0]["fid"]
    assert len(list((tmp_path / "home" / "cache").glob("fid-*.npz"))) == 4



def test_the_default_inception_batch_is_the_measured_one_and_batching_leaves_the_figures(invoke, tiny, tmp_path,
                                                                                       monkeypatch):
    import typer

    from dlkit.cli import app
    from dlkit.tasks.gan import evaluate

    cmd = typer.main.get_command(app).commands["gan-eval"]
    assert next(p.default for p in cmd.params if p.name == "batch_size") == fidlib.BATCH
    model, data, incep = tiny
    monkeypatch.setattr(evaluate, "GEN_CHUNK", 5)  # generator chunks of 5 that Inception batches of 8 and 3 cross
    figures = []
    for i, more in enumerate([(), ("--batch-size", "3")]):
        monkeypatch.setenv("DLKIT_HOME", str(tmp_path / f"home{i}"))
        figures.append([r["fid"] for r in _eval(invoke, model, data, incep, "-n", "12", *more)[0]])
    assert np.allclose(figures[0], figures[1], rtol=1e-6, atol=1e-9), figures

def test_the_cache_key_follows_the_inception_file_and_the_preprocessing(tiny, monkeypatch):
    from dlkit.tasks.gan.evaluate import real_feature_cache

    _, data, _ = tiny
    shape = (1, 28, 28)
    base = real_feature_cache(str(data), shape, inception="a")("train-all-60")
    assert base == real_feature_cache(str(data), shape, inception="a")("train-all-60")
    assert base != real_feature_cache(str(data), shape, inception="b")("train-all-60")
    assert base != real_feature_cache(str(data), shape, inception="a")("test-12-seed1")
    monkeypatch.setattr(fidlib, "PREPROCESS_VERSION", "changed")
    assert base != real_feature_cache(str(data), shape, inception="a")("train-all-60")


def test_a_damaged_cache_file_is_computed_again(tmp_path):
    f = tmp_path / "c.npz"
    f.write_bytes(b"not an npz")
    calls = []

    def compute():
        calls.append(1)
        return np.zeros(3), np.eye(3), 5

    mu, sigma, n = fidlib.cached_statistics(f, compute)
    assert calls == [1] and n == 5
    mu, sigma, n = fidlib.cached_statistics(f, compute)  # now a good file: read, not computed
    assert calls == [1] and n == 5 and np.array_equal(sigma, np.eye(3))


def test_help_says_why_there_is_no_inception_score(invoke):
    text = " ".join(invoke("gan-eval", "--help").stdout.split())
    assert "Inception Score is not offered" in text and "no classifier logits" in text


def test_gan_train_takes_the_ttur_recipe_switches(invoke, tmp_path):
    from dlkit.tasks.gan.infer import load_gan

    out = tmp_path / "toy"
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "2", "--loss", "hinge", "--lr", "1e-4", "--d-lr", "4e-4",
               "--beta1", "0", "--beta2", "0.9", "--ema", "0.9", "--out", out)
    assert r.exit_code == 0, r.stderr
    _, meta = load_gan(out / "model.safetensors")
    recipe = meta["training"]["recipe"]
    assert (recipe["loss"], recipe["lr"], recipe["d_lr"], recipe["beta1"], recipe["beta2"], recipe["ema"]) == \
        ("hinge", 1e-4, 4e-4, 0.0, 0.9, 0.9)
