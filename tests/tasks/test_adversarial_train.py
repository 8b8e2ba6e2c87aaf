"""adv-train: adversarial training beats standard training under PGD on a toy set, catastrophic overfitting is
caught, resume is exact, the CLI writes a classifier file adv-attack reads; APGD-CE against AutoAttack."""

import json

import numpy as np
import pytest
import torch

from dlkit.core.errors import Interrupted
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.adversarial.recipe import AdvTrainConfig
from dlkit.tasks.adversarial.train import EpochCheck, adv_train, collapsed, cyclic_lr
from dlkit.vision.attacks import pgd
from dlkit.vision.classifier import load_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n: int, seed: int):
    """uint8 (n, 12, 12): a 4x4 blob of 0.6-0.8 in quadrant y on noise up to 0.3; y in 0..3."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 4, n)
    x = g.random((n, 12, 12)) * 0.3
    for i, k in enumerate(y):
        t, left = (k // 2) * 6 + g.integers(0, 3), (k % 2) * 6 + g.integers(0, 3)
        x[i, t:t + 4, left:left + 4] = 0.6 + 0.2 * g.random((4, 4))
    return (x * 255).round().astype(np.uint8), y.astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("advtrain") / "toy.npz"
    (xt, yt), (xs, ys) = toy(800, 0), toy(200, 1)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


def train(data, out, **kw):
    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=1)
    cfg = AdvTrainConfig(dataset="mnist", data=str(data), out=str(out), batch_size=32, check_n=200, eval_n=0, **kw)
    return adv_train(cfg, rt, Reporter(quiet=True))


def pgd_accuracy(path, data, eps):
    model = load_classifier(path)
    with np.load(data) as z:
        x = torch.from_numpy(z["x_test"]).float().unsqueeze(1) / 255
        y = torch.from_numpy(z["y_test"]).long()
    torch.manual_seed(0)
    adv = pgd(model, x, y, eps, steps=20)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()), float((model(adv).argmax(1) == y).float().mean())


# ------------------------------------------------------------------ pieces
def test_cyclic_lr_and_collapse_rule():
    lrs = [cyclic_lr(s, 100, 1.0) for s in range(101)]
    assert lrs[0] == 0 and lrs[40] == pytest.approx(1.0) and lrs[100] == 0 and max(lrs) == pytest.approx(1.0)
    good = EpochCheck(3, 0.5, 0.95, 0.7, 0.6, 1.0)
    assert collapsed([EpochCheck(4, 0.4, 0.97, 0.9, 0.1, 1.0)], good, 0.2)  # PGD falls, FGSM climbs
    assert not collapsed([EpochCheck(4, 0.4, 0.5, 0.3, 0.1, 1.0)], good, 0.2)  # everything falls: not this
    assert not collapsed([EpochCheck(4, 0.4, 0.97, 0.9, 0.5, 1.0)], good, 0.2)  # a small dip
    assert not collapsed([EpochCheck(4, 0.4, 0.97, 0.9, 0.1, 1.0)], None, 0.2)  # no good epoch yet


def test_pgd_step_follows_the_step_count():
    from dlkit.tasks.adversarial.recipe import resolve

    madry = resolve(AdvTrainConfig(dataset="mnist", method="pgd"), channels=1)
    assert (madry.eps, madry.steps, madry.step_size) == (0.3, 40, 0.01)  # Madry et al.'s MNIST setting
    fewer = resolve(AdvTrainConfig(dataset="mnist", method="pgd", steps=10), channels=1)
    assert fewer.step_size == pytest.approx(2.5 * 0.3 / 10)  # 10 steps of 0.01 would not cross the eps box
    assert resolve(AdvTrainConfig(dataset="mnist", method="pgd", steps=10, step_size=0.02), channels=1).step_size == 0.02


def test_config_refuses_what_cannot_work():
    from dlkit.core.errors import UsageError

    for kw, words in [({"eps": float("inf")}, "finite"), ({"eps": 2.0}, "must be in"), ({"method": "trades"}, "one of"),
                      ({"method": "fgsm-rs", "steps": 7}, "--attack-steps"), ({"lr": float("nan")}, "finite")]:
        with pytest.raises(UsageError, match=words):
            AdvTrainConfig(**kw)


# ------------------------------------------------------------------ learning
def test_adversarial_training_beats_standard_under_pgd(data, tmp_path):
    eps = 0.15
    std = train(data, tmp_path / "std", method="none", eps=eps, epochs=5)
    rob = train(data, tmp_path / "pgd", method="pgd", eps=eps, steps=5, epochs=5)
    clean_std, robust_std = pgd_accuracy(std.model, data, eps)
    clean_rob, robust_rob = pgd_accuracy(rob.model, data, eps)
    assert clean_std >= 0.95 and clean_rob >= 0.95
    assert robust_rob >= 0.9 and robust_rob > robust_std + 0.25, (robust_std, robust_rob)
    assert rob.history[-1].pgd > std.history[-1].pgd + 0.25  # the monitor sees it on the training batch too


def test_catastrophic_overfitting_stops_and_keeps_the_last_good_epoch(data, tmp_path):
    # FGSM without a random start, eps 0.25 and a high learning rate: FGSM accuracy reaches 100% while PGD
    # accuracy on the training batch falls (Wong et al. 2020's catastrophic overfitting). The epoch it comes in
    # depends on the CPU's float rounding (before epoch 12 on an AMD EPYC, at 12 on an Intel Xeon): room up to 20.
    r = train(data, tmp_path / "co", method="fgsm", eps=0.25, lr=0.03, epochs=20, overfit_drop=0.15)
    assert r.stopped == "overfit" and r.epochs < 20 and r.kept_epoch == r.epochs - 1
    last, kept = r.history[-1], r.history[r.kept_epoch - 1]
    assert last.pgd < kept.pgd - 0.15 and last.fgsm >= kept.fgsm
    state = torch.load(tmp_path / "co" / "state.pt", weights_only=True)
    saved = load_classifier(r.model).net.state_dict()
    assert all(torch.equal(saved[k], state["good_model"]["net." + k]) for k in saved)  # the good epoch's weights


def test_resume_equals_uninterrupted(data, tmp_path):
    from conftest import StopAt

    whole = train(data, tmp_path / "whole", method="fgsm-rs", eps=0.1, epochs=2, subset=256)
    rt = make_runtime("cpu", "fp32", 0, distributed=False, threads=1)
    cfg = AdvTrainConfig(dataset="mnist", data=str(data), out=str(tmp_path / "cut"), method="fgsm-rs", eps=0.1,
                         epochs=2, subset=256, batch_size=32, check_n=200, eval_n=0)
    with pytest.raises(Interrupted, match="--resume"):
        adv_train(cfg, rt, Reporter(quiet=True), StopAt(11))  # in epoch 2 (8 steps per epoch)
    cfg.resume = True
    again = adv_train(cfg, make_runtime("cpu", "fp32", 0, distributed=False, threads=1), Reporter(quiet=True))
    a, b = load_classifier(whole.model).state_dict(), load_classifier(again.model).state_dict()
    assert again.epochs == 2 and all(torch.equal(a[k], b[k]) for k in a)


def test_init_starts_from_a_classifier_file_of_the_same_network(data, tmp_path):
    from dlkit.core.errors import UsageError

    base = train(data, tmp_path / "base", method="none", eps=0.1, epochs=2, subset=256)
    kw = dict(method="pgd", eps=0.1, steps=2, epochs=1, subset=256, lr=1e-9)  # a step that moves almost nothing
    tuned = train(data, tmp_path / "tuned", init=base.model, **kw)
    fresh = train(data, tmp_path / "fresh", **kw)
    a, b, c = (load_classifier(r.model).state_dict() for r in (base, tuned, fresh))
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert not all(torch.allclose(a[k], c[k], atol=1e-2) for k in a)
    with pytest.raises(UsageError, match="--init .*match --arch and --width"):
        train(data, tmp_path / "other", init=base.model, width=8, **kw)


# ------------------------------------------------------------------ CLI
def test_cli_trains_a_file_adv_attack_reads(invoke, data, tmp_path):
    out = tmp_path / "run"
    args = ["adv-train", "--data", data, "--method", "fgsm-rs", "--eps", "0.1", "--epochs", "2", "--batch-size", "32",
            "--subset", "256", "--eval-images", "50", "--out", out, "--threads", "1", "--device", "cpu"]
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(str(out / "model.safetensors")), r.stdout
    assert "epoch   2" in r.stderr and "fgsm-rs" in r.stdout
    meta = load_classifier(out / "model.safetensors").meta
    assert meta["recipe"]["command"] == "adv-train" and meta["metrics"]["pgd"]["n"] == 50
    before = (out / "model.safetensors").read_bytes()
    r = invoke(*args)  # --out is never clobbered
    assert r.exit_code != 0 and "--resume" in r.stderr and (out / "model.safetensors").read_bytes() == before
    std = tmp_path / "std"
    assert invoke("adv-train", "--data", data, "--method", "none", "--epochs", "2", "--batch-size", "32", "--subset",
                  "256", "--eval-images", "0", "--out", std, "--threads", "1", "--device", "cpu").exit_code == 0
    r = invoke("adv-attack", "--dataset", "mnist", "--data", data, "-m", std / "model.safetensors", "-m",
               out / "model.safetensors", "--method", "fgsm,pgd", "--eps", "0,0.1", "--limit", "40")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["attack", "eps", "std/model", "run/model"]
    assert lines[1].startswith("clean") and lines[2].startswith("fgsm") and lines[3].startswith("pgd")
    r = invoke("adv-attack", "--dataset", "mnist", "--data", data, "-m", std / "model.safetensors", "--robustness",
               "--restarts", "2", "--eps", "0,0.1", "--limit", "8", "--json")
    assert r.exit_code == 0, r.stderr
    names = [json.loads(line)["method"] for line in r.stdout.splitlines()]
    assert names == ["fgsm", "fgsm", "pgd-40x2", "pgd-40x2", "pgd-100x2", "pgd-100x2", "apgd-cex2", "apgd-cex2"]
    r = invoke("adv-train", "--data", data, "--json", "--quiet", "--epochs", "1", "--subset", "64", "--batch-size", "32",
               "--eval-images", "0", "--out", tmp_path / "j", "--threads", "1", "--device", "cpu", "--method", "fgsm-rs")
    assert r.exit_code == 0 and r.stderr == ""
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert recs[0]["event"] == "epoch" and recs[-1]["event"] == "result" and recs[-1]["method"] == "fgsm-rs"


@pytest.mark.parametrize("args,words", [(["--eps", "inf"], "finite"), (["--eps", "0"], "must be in"),
                                        (["--method", "fgsm-rs", "--attack-steps", "5"], "--attack-steps"),
                                        (["--resume"], "no saved training state")])
def test_cli_refusals(invoke, data, tmp_path, args, words):
    r = invoke("adv-train", "--data", data, "--out", tmp_path / "x", "--threads", "1", *args)
    assert r.exit_code != 0 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# ------------------------------------------------------------------ APGD-CE, and AutoAttack as a cross-check
def test_apgd_ce_checkpoints_and_strength(data, tmp_path):
    from dlkit.vision.apgd import apgd_ce, checkpoints

    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # Croce & Hein 2020: p_1 = 0.22, steps of -0.03
    r = train(data, tmp_path / "m", method="fgsm-rs", eps=0.15, epochs=4)
    model = load_classifier(r.model)
    with np.load(data) as z:
        x = torch.from_numpy(z["x_test"][:100]).float().unsqueeze(1) / 255
        y = torch.from_numpy(z["y_test"][:100]).long()
    torch.manual_seed(0)
    eps = 0.2
    adv = apgd_ce(model, x, y, eps, steps=50)
    assert float((adv - x).abs().max()) <= eps + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    small_steps = pgd(model, x, y, eps, steps=10, step_size=eps / 10)

    def acc(a):
        with torch.no_grad():
            return float((model(a).argmax(1) == y).float().mean())

    ours, weak = acc(adv), acc(small_steps)
    assert ours <= weak + 0.02  # at least as strong as a small-step PGD

    ta = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    theirs = acc(ta.APGD(model, norm="Linf", eps=eps, steps=50, loss="ce", seed=0)(x, y))
    assert abs(ours - theirs) <= 0.03, (ours, theirs)  # the same algorithm: the same robust accuracy
    torch.manual_seed(0)
    aa = ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)
    reference = acc(aa(x, y))
    # AutoAttack adds APGD-T (DLR loss), FAB and Square to APGD-CE: it may only find more
    assert reference <= ours + 0.01, (ours, reference)


def test_nan_loss_stops_and_keeps_the_last_good_state(data, tmp_path, monkeypatch):
    from dataclasses import replace

    import dlkit.tasks.adversarial.train as T
    from dlkit.core.errors import TrainingDiverged

    real, calls = T.train_epoch, []

    def diverging(*a, **k):
        res = real(*a, **k)
        calls.append(1)
        return replace(res, loss=float("nan")) if len(calls) == 2 else res

    monkeypatch.setattr(T, "train_epoch", diverging)
    with pytest.raises(TrainingDiverged, match="state.pt"):
        train(data, tmp_path / "nan", method="fgsm-rs", eps=0.1, epochs=3, subset=128)
    state = torch.load(tmp_path / "nan" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and not (tmp_path / "nan" / "model.safetensors").exists()
