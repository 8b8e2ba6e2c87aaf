"""`dlkit classifier-train`: the airbench recipe end to end on tiny data made here."""

import json

import numpy as np
import pytest
import torch

from dlkit.vision.classifier import load_classifier


def colour_folder(root, n_train=48, n_test=24, size=16, seed=0):
    """An image folder of two classes told apart by their dominant colour, with noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(("red", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n // 2):
                a = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
                a[..., 2 * k] += 140
                Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return colour_folder(tmp_path_factory.mktemp("colours"))


def test_preset_learns_and_writes_a_classifier(invoke, folder, tmp_path, one_thread):
    out = tmp_path / "run"
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "16", "--epochs", "4",
                 "--threads", "1", "--json")
    assert res.exit_code == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    epochs = [e for e in events if e["event"] == "epoch"]
    result = [e for e in events if e["event"] == "result"][-1]
    assert len(epochs) == 4 and epochs[-1]["loss"] < epochs[0]["loss"]
    assert result["test_accuracy"] >= 0.9 and result["tta"] == 2 and result["test_images"] == 24
    assert "epoch" in res.stderr  # progress for people on stderr
    clf = load_classifier(out / "model.safetensors")
    assert clf.arch == "airbench" and sorted(clf.classes) == ["blue", "red"]
    meta = clf.meta
    assert meta["metrics"]["test_accuracy_no_tta"] == pytest.approx(result["test_accuracy_no_tta"], abs=1e-4)
    assert meta["recipe"]["lookahead"] and meta["recipe"]["label_smoothing"] == 0.2
    assert not clf.net.whiten.weight.float().isnan().any()
    x = torch.rand(3, 3, 16, 16)
    assert clf(x).shape == (3, 2)


def test_switches_reach_the_model_file(invoke, folder, tmp_path, one_thread):
    out = tmp_path / "ablated"
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "16", "--epochs", "1",
                 "--threads", "1", "--disable", "lookahead,tta,whiten-init,label-smoothing,channels-last",
                 "--save-dtype", "fp32")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == str(out / "model.safetensors")  # the one result on stdout
    recipe = load_classifier(out / "model.safetensors").meta["recipe"]
    assert (recipe["lookahead"], recipe["tta"], recipe["whiten_init"], recipe["label_smoothing"]) == (False, 0, False, 0.0)
    assert recipe["disable"] == "lookahead,tta,whiten-init,label-smoothing,channels-last"


def test_widths_build_a_wider_network_that_loads_back(invoke, folder, tmp_path, one_thread):
    out = tmp_path / "narrow"
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "16", "--epochs", "1",
                 "--threads", "1", "--widths", "8,16,24", "--save-dtype", "fp32")
    assert res.exit_code == 0, res.stderr
    clf = load_classifier(out / "model.safetensors")
    assert clf.meta["arch_kwargs"] == {"widths": [8, 16, 24]}
    convs = [m for m in clf.net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 24, 24]
    assert clf(torch.rand(2, 3, 16, 16)).shape == (2, 2)
    # the default widths are not written (the file stays readable as airbench94's network)
    default = tmp_path / "default"
    assert invoke("classifier-train", "--data", folder, "--out", default, "--batch-size", "16", "--epochs", "1",
                  "--threads", "1", "--widths", "64,256,256").exit_code == 0
    assert load_classifier(default / "model.safetensors").meta["arch_kwargs"] == {}


@pytest.mark.parametrize("args, match", [
    (["--widths", "64,256"], "--widths '64,256': expected three"),
    (["--widths", "64,0,256"], "between 1 and 2,048"),
    (["--disable", "mixup"], "--disable mixup"),
    (["--batch-size", "500"], "fewer than one batch"),
    (["--preset", "resnet50"], "--preset"),
])
def test_bad_input_is_one_line(invoke, folder, tmp_path, args, match):
    res = invoke("classifier-train", "--data", folder, "--out", tmp_path / "o", "--epochs", "1", *args)
    assert res.exit_code != 0 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert match in res.stderr, res.stderr


def test_missing_data_is_one_line(invoke, tmp_path):
    res = invoke("classifier-train", "--data", tmp_path / "nope.npz", "--out", tmp_path / "o")
    assert res.exit_code != 0 and "does not exist" in res.stderr and res.stdout == ""


# ------------------------------------------------------------------ --resume
def _cfg(folder, out, **kw):
    from dlkit.tasks.classifier.train import TrainConfig

    return TrainConfig(**{**dict(data=str(folder), out=str(out), batch_size=16, epochs=6, save_dtype="fp32"), **kw})


def _rt():
    from dlkit.core.runtime import make_runtime

    return make_runtime("cpu", "fp32", 0, distributed=False, threads=1)


def test_interrupted_and_resumed_training_equals_uninterrupted(folder, tmp_path, one_thread):
    """Ctrl-C in epoch 5 (3 steps an epoch: steps 13-15), after the whitening bias froze (epoch 3) and the
    lookahead average started (step 10): the resumed run restarts epoch 5 from the saved end of epoch 4 and
    ends with the weights, the lookahead average and the schedule of a run never interrupted."""
    from conftest import StopAt
    from dlkit.core.errors import Interrupted
    from dlkit.core.report import Reporter
    from dlkit.core.state import load_state
    from dlkit.tasks.classifier.train import train

    whole = train(_cfg(folder, tmp_path / "whole"), _rt(), Reporter(quiet=True))
    cut = tmp_path / "cut"
    with pytest.raises(Interrupted, match="continue with --resume"):
        train(_cfg(folder, cut), _rt(), Reporter(quiet=True), StopAt(14))
    saved = load_state(cut / "model.state.pt", "classifier-train")
    assert (saved["epoch"], saved["step"]) == (4, 12) and saved["lookahead"] is not None
    assert not (cut / "model.safetensors").exists()
    again = train(_cfg(folder, cut, resume=True), _rt(), Reporter(quiet=True))
    assert (again.epochs, again.steps) == (whole.epochs, whole.steps) == (6, 18)
    a, b = load_state(tmp_path / "whole" / "model.state.pt"), load_state(cut / "model.state.pt")
    assert a["p"] == b["p"] == 1.0
    for part in ("model", "lookahead"):
        differ = [k for k in a[part] if not torch.equal(a[part][k], b[part][k])]
        assert differ == [], f"{part}: {len(differ)} of {len(a[part])} tensors differ"
    assert again.test_accuracy_no_tta == whole.test_accuracy_no_tta


def test_resume_continues_the_schedule_with_more_epochs(folder, tmp_path, one_thread):
    """A run cut short by Ctrl-C and resumed with a longer --epochs spreads the rest of its schedule over the
    new remaining steps: it trains on to the new end instead of starting the schedule again."""
    from conftest import StopAt
    from dlkit.core.errors import Interrupted
    from dlkit.core.report import Reporter
    from dlkit.core.state import load_state
    from dlkit.tasks.classifier.train import train

    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(_cfg(folder, out, epochs=4), _rt(), Reporter(quiet=True), StopAt(8))  # saved: end of epoch 2
    p0 = load_state(out / "model.state.pt")["p"]
    assert p0 == pytest.approx(6 / 12)
    res = train(_cfg(folder, out, epochs=8, resume=True), _rt(), Reporter(quiet=True))
    assert (res.epochs, res.steps) == (8, 24)
    assert load_state(out / "model.state.pt")["p"] == pytest.approx(1.0)


def test_resume_refusals_are_one_line(invoke, folder, tmp_path):
    from dlkit.core.state import save_state

    out = tmp_path / "o"
    res = invoke("classifier-train", "--data", folder, "--out", out, "--resume")
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert "--resume: there is no saved training state in" in res.stderr and "(no model.state.pt)" in res.stderr
    save_state(out / "model.state.pt", {"config": {}, "step": 3}, task="adv-train")
    res = invoke("classifier-train", "--data", folder, "--out", out, "--resume", "--batch-size", "16")
    assert res.exit_code != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "saved by a 'adv-train' run; a 'classifier-train' run cannot resume it" in res.stderr
    res = invoke("classifier-train", "--data", folder, "--out", out, "--resume", "--overwrite")
    assert res.exit_code == 2 and "--resume and --overwrite exclude each other" in res.stderr


def test_resume_with_other_shape_settings_is_refused(invoke, folder, tmp_path, one_thread):
    out = tmp_path / "o"
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "16", "--epochs", "1",
                 "--threads", "1")
    assert res.exit_code == 0, res.stderr
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "8", "--resume")
    assert res.exit_code == 2 and "--batch-size 8 (the run used 16)" in res.stderr, res.stderr
    res = invoke("classifier-train", "--data", folder, "--out", out, "--batch-size", "16", "--threads", "1")
    assert res.exit_code != 0 and "add --resume to continue it" in res.stderr  # a run there: never clobbered
