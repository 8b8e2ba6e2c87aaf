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


@pytest.mark.parametrize("args, match", [
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
