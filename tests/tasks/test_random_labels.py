"""fit-random-labels (Zhang et al. 2017): corruption semantics, learning, resume, CLI and bad input."""

import json

import numpy as np
import pytest
import torch

from dlkit.core.errors import Interrupted, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.random_labels.data import Corruption, corrupt, parse_corruptions
from dlkit.tasks.random_labels.train import FitConfig, fit
from dlkit.vision.datasets import ImageData


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


def images(n=500, c=3, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, size, size), generator=g).to(torch.uint8)
    return ImageData(x, torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)])


def mnist_file(path, n=300, n_test=500, size=8):
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
             y_train=rng.integers(0, 10, n).astype(np.uint8),
             x_test=rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
             y_test=rng.integers(0, 10, n_test).astype(np.uint8))
    return path


# ---------------------------------------------------------------- corruptions
def test_parse():
    assert [c.name for c in parse_corruptions("true, random,partial:0.5,random")] == ["true", "random", "partial:0.5"]
    assert len(parse_corruptions("all")) == 9
    for bad, match in [("partial:1.5", r"in \[0, 1\]"), ("partial:x", "partial:P"), ("noise", "unknown corruption"),
                       ("", "empty"), ("random:0.3", "unknown corruption")]:
        with pytest.raises(UsageError, match=match):
            parse_corruptions(bad)


def test_label_corruptions_marginals():
    train, test = images(20000), images(100, seed=1)
    for level in (0.0, 0.5, 1.0):
        c = Corruption("partial", level) if 0 < level < 1 else Corruption("true" if level == 0 else "random", level)
        tr, te = corrupt(train, test, c, seed=0)
        changed = (tr.labels != train.labels).float().mean().item()
        assert abs(changed - level * 0.9) < 0.015  # a random class equals the true one 1/10 of the time
        counts = torch.bincount(tr.labels, minlength=10).float() / len(tr.labels)
        assert (counts - 0.1).abs().max() < 0.01  # marginals stay uniform
        assert torch.equal(tr.images, train.images) and torch.equal(te.labels, test.labels)
    again, _ = corrupt(train, test, Corruption("random", 1.0), seed=0)
    assert torch.equal(again.labels, corrupt(train, test, Corruption("random", 1.0), seed=0)[0].labels)  # drawn once, seeded


def test_shuffled_pixels_one_permutation():
    train, test = images(50), images(20, seed=1)
    # images whose pixel values are their positions reveal the permutation
    pos = torch.arange(36).view(1, 1, 6, 6).expand(50, 3, 6, 6).to(torch.uint8).clone()
    tr, te = corrupt(ImageData(pos, train.labels, train.classes), ImageData(pos[:20], test.labels, test.classes),
                     Corruption("shuffled-pixels"), seed=0)
    perm = tr.images[0, 0].flatten()
    assert sorted(perm.tolist()) == list(range(36)) and not torch.equal(perm, torch.arange(36, dtype=torch.uint8))
    assert (tr.images == tr.images[0]).all() and (te.images == tr.images[0]).all()  # same for train and test
    assert (tr.images[:, 0] == tr.images[:, 1]).all()  # the channels of a pixel move together
    assert torch.equal(tr.labels, train.labels)


def test_random_pixels_per_image_permutations():
    pos = torch.arange(36).view(1, 1, 6, 6).expand(40, 3, 6, 6).to(torch.uint8).clone()
    data = ImageData(pos, torch.zeros(40, dtype=torch.long), [str(i) for i in range(10)])
    tr, te = corrupt(data, data, Corruption("random-pixels"), seed=0)
    perms = tr.images[:, 0].flatten(1)
    assert all(sorted(p.tolist()) == list(range(36)) for p in perms)  # each image keeps its pixels
    assert len({tuple(p.tolist()) for p in perms}) == 40  # a different permutation for each image
    assert not torch.equal(te.images, tr.images)


def test_gaussian_matches_moments():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2000, 3, 6, 6, generator=g) * torch.tensor([100.0, 200.0, 50.0]).view(1, 3, 1, 1)
         + torch.tensor([10.0, 20.0, 150.0]).view(1, 3, 1, 1)).to(torch.uint8)
    data = ImageData(x, torch.zeros(2000, dtype=torch.long), [str(i) for i in range(10)])
    tr, te = corrupt(data, data, Corruption("gaussian"), seed=0)
    ref = x.float() / 255
    for dim in (0, 1, 2):
        assert abs(tr.images[:, dim].float().mean() - ref[:, dim].mean()) < 0.005
        assert abs(tr.images[:, dim].float().std() - ref[:, dim].std()) < 0.005
    assert te.images.shape == x.shape and not torch.equal(te.images, tr.images)


# ---------------------------------------------------------------- learning, resume
class StopAfter(StopSignal):
    """Ask to stop at the n-th optimizer step of the whole command (runs restart their step count)."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def poll(self, step):
        self.armed = True
        self.n -= 1
        return self.n == 0


def cfg_for(tmp_path, **kw):
    base = dict(dataset="mnist", data=str(mnist_file(tmp_path / "m.npz")), corruptions="random", arch="mlp-1x512",
                out=str(tmp_path / "out"), until_fit=True, max_epochs=150, lr=0.05, lr_decay=1.0, batch_size=50,
                figures=False)
    return FitConfig(**{**base, **kw})


def test_mlp_fits_random_labels(tmp_path):
    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=1)
    result = fit(cfg_for(tmp_path, corruptions="true,random"), rt, Reporter(quiet=True))
    for r in result.runs:
        assert r.fitted and r.train_acc == 1.0 and r.steps_to_fit is not None
        assert 0.03 < r.test_acc < 0.2  # labels of noise: nothing to generalise, test accuracy stays near chance
    true, random = result.runs  # this toy's "true" labels are noise too: no slowdown to expect, only its sum
    assert random.slowdown == round(random.steps_to_fit / true.steps_to_fit, 2)
    from dlkit.vision.classifier import load_classifier

    clf = load_classifier(result.runs[1].model)
    assert clf.whiten and clf.meta["training"]["corruption"] == "random"


def test_slowdown_needs_two_fitted_runs():
    from dlkit.tasks.random_labels.train import RunResult, _slowdowns

    def run(name, steps):
        return RunResult(name, "mlp", None, 1.0, 0.1, 0.0, 3, 90, steps, steps is not None, 1.0, 1.0, "m")

    runs = [run("true", 40), run("random", 100), run("gaussian", None)]
    _slowdowns(runs)
    assert [r.slowdown for r in runs] == [1.0, 2.5, None]
    runs = [run("true", None), run("random", 100)]
    _slowdowns(runs)
    assert [r.slowdown for r in runs] == [None, None]


@pytest.mark.parametrize("stop_after", [39, 27])  # "random"'s 3rd epoch; its 1st, just after "true" finished
def test_interrupted_resume_equals_uninterrupted(tmp_path, stop_after):
    # Every run on one thread: with the default (the idle cores measured at start-up) two runs may use 1 and
    # 2 threads, and a matmul summed in another order differs in the last bits (1.2121360 vs 1.2121363).
    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=1)
    kw = dict(corruptions="true,random", until_fit=False, max_epochs=4)
    full = fit(cfg_for(tmp_path, out=str(tmp_path / "a"), **kw), rt, Reporter(quiet=True))
    with pytest.raises(Interrupted):
        fit(cfg_for(tmp_path, out=str(tmp_path / "b"), **kw), make_runtime("cpu", "fp32", 0, distributed=False, threads=1),
            Reporter(quiet=True), StopAfter(stop_after))  # 6 steps per epoch, 4 epochs per run
    resumed = fit(cfg_for(tmp_path, out=str(tmp_path / "b"), resume=True, **kw),
                  make_runtime("cpu", "fp32", 0, distributed=False, threads=1), Reporter(quiet=True))
    for a, b in zip(full.runs, resumed.runs):
        assert (a.corruption, a.train_acc, a.test_acc, a.train_loss, a.steps) == \
               (b.corruption, b.train_acc, b.test_acc, b.train_loss, b.steps)
    with pytest.raises(UsageError, match="--arch"):
        fit(cfg_for(tmp_path, out=str(tmp_path / "b"), resume=True, arch="mlp-3x512", **kw), rt, Reporter(quiet=True))


# ---------------------------------------------------------------- CLI
def test_cli_table_json_and_figures(invoke, tmp_path):
    data = mnist_file(tmp_path / "m.npz", n=200, n_test=100)
    out = tmp_path / "run"
    res = invoke("fit-random-labels", "--dataset", "mnist", "--data", data, "-c", "true,partial:0.5,random",
                 "--max-epochs", "2", "--out", out, "--json", "--threads", "1")
    assert res.exit_code == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    runs = [x for x in lines if x["event"] == "run"]
    assert [r["corruption"] for r in runs] == ["true", "partial:0.5", "random"]
    for r in runs:
        assert {"corruption", "arch", "train_acc", "test_acc", "epochs", "steps", "seconds", "fitted"} <= set(r)
        assert 0 <= r["train_acc"] <= 1 and r["epochs"] == 2
    for name in ("fig1a_loss.png", "fig1b_steps_to_fit.png", "fig1c_test_error.png", "random.safetensors"):
        assert (out / name).stat().st_size > 0
    res = invoke("fit-random-labels", "--dataset", "mnist", "--data", data, "-c", "random", "--max-epochs", "1",
                 "--out", tmp_path / "plain", "--no-figures")
    assert res.exit_code == 0
    assert res.stdout.splitlines()[0].split()[:3] == ["corruption", "train", "acc"]
    assert "random" in res.stdout.splitlines()[2] and "warning" not in res.stdout


@pytest.mark.parametrize("args, match", [
    (["-c", "partial:1.5"], r"\[0, 1\]"),
    (["-c", "bogus"], "unknown corruption"),
    (["--arch", "vgg"], "--arch.*'vgg' is not one of"),  # refused at parse time, before any data is read
    (["--subset", "5000"], "larger than the dataset"),
    (["--subset", "0"], "--subset"),
    (["--fit-threshold", "1.5"], "--fit-threshold"),
])
def test_cli_bad_input(invoke, tmp_path, args, match):
    data = mnist_file(tmp_path / "m.npz", n=50, n_test=20)
    res = invoke("fit-random-labels", "--dataset", "mnist", "--data", data, "--out", tmp_path / "o", *args)
    assert res.exit_code != 0 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert __import__("re").search(match, res.stderr), res.stderr


def test_cli_bad_data(invoke, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, something=np.zeros(3))
    folder = tmp_path / "flat"
    folder.mkdir()
    (folder / "x.txt").write_text("no classes")
    for data, match in [(bad, "missing array"), (folder, "no class subfolders"), (tmp_path / "nope.npz", "does not exist")]:
        res = invoke("fit-random-labels", "--dataset", "mnist", "--data", data, "--out", tmp_path / "o2", "--overwrite")
        assert res.exit_code != 0 and match in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    """torchrun with 2 gloo processes: each rank trains on its half of every epoch; rank 0 alone writes and renders."""
    import os
    import subprocess
    import sys

    data = mnist_file(tmp_path / "m.npz", n=256, n_test=50)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit",
           "fit-random-labels", "--dataset", "mnist", "--data", str(data), "-c", "random", "--max-epochs", "2",
           "--batch-size", "64", "--out", str(tmp_path / "ddp"), "--device", "cpu", "--json", "--no-figures"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    runs = [json.loads(x) for x in r.stdout.splitlines() if '"event": "run"' in x]
    assert len(runs) == 1 and runs[0]["steps"] == 4  # 256 images / 2 ranks / 64 per batch = 2 steps per epoch
    assert (tmp_path / "ddp" / "random.safetensors").exists()


def test_cli_image_folder(invoke, tmp_path):
    from PIL import Image

    for k, name in enumerate(["ants", "bees"]):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (9, 7), (120 * k, 20 * i, 50)).save(tmp_path / "f" / name / f"{i}.png")
    res = invoke("fit-random-labels", "--data", tmp_path / "f", "--image-size", "8", "-c", "random", "--max-epochs", "1",
                 "--batch-size", "4", "--out", tmp_path / "o", "--json", "--no-figures")
    assert res.exit_code == 0, res.stderr
    run = json.loads(res.stdout.splitlines()[-2])
    assert run["event"] == "run" and run["corruption"] == "random"
    assert "holding out 4 images" in res.stderr


def test_airbench_network_fits_random_labels(tmp_path):
    # airbench94's network (Zhang et al.'s SGD, not the airbench recipe) memorises noise labels too
    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=1)
    data = mnist_file(tmp_path / "m16.npz", n=100, n_test=50, size=16)
    result = fit(cfg_for(tmp_path, data=str(data), arch="airbench", lr=0.1, max_epochs=40), rt, Reporter(quiet=True))
    run = result.runs[0]
    assert run.fitted and run.train_acc == 1.0 and run.arch == "airbench"
    assert run.test_acc < 0.3
