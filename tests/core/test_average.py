"""`dlkit models average`: checkpoint averaging of model files of one network."""

import json

import pytest
import torch

from dlkit.core.average import average_files
from dlkit.core.modelfile import load_model_file, read_header, read_meta, save_model


def _net(seed: int, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Embedding(10, width), torch.nn.Linear(width, width),
                              torch.nn.BatchNorm1d(width), torch.nn.Linear(width, 10, bias=False))
    net[3].weight = net[0].weight  # tied, as the language and translation models are
    net[2].running_mean.normal_()
    net[2].num_batches_tracked.fill_(seed)
    return net


def _save(path, seed, width=4, dtype=None, **meta):
    net = _net(seed, width)
    save_model(path, net.state_dict(), {"task": "toy", "config": {"width": width}, "training": {"steps": seed * 100},
                                        "metrics": {"score": seed}, **meta}, dtype=dtype)
    return net.state_dict()


def test_mean_of_floats_last_of_integers_and_ties_kept(tmp_path):
    a = _save(tmp_path / "a.safetensors", 1)
    b = _save(tmp_path / "b.safetensors", 2)
    c = _save(tmp_path / "c.safetensors", 3)
    state, meta, dtype = average_files([tmp_path / f"{x}.safetensors" for x in "abc"])
    for k, v in a.items():
        if v.is_floating_point():
            torch.testing.assert_close(state[k], (a[k] + b[k] + c[k]) / 3, rtol=0, atol=1e-6)
    assert int(state["2.num_batches_tracked"]) == 3  # the last file's counter, not a mean
    assert dtype == "fp32" and meta["metrics"] == {} and meta["training"]["steps"] == 300
    assert [x["steps"] for x in meta["averaged"]] == [100, 200, 300]
    assert state["3.weight"] is state["0.weight"]
    save_model(tmp_path / "avg.safetensors", state, meta)
    assert "3.weight" not in read_header(tmp_path / "avg.safetensors")  # stored once, re-linked on load


def test_weights_and_storage_type(tmp_path):
    a = _save(tmp_path / "a.safetensors", 1, width=32, dtype="int8")  # 32 x 32: stored as int8
    b = _save(tmp_path / "b.safetensors", 2, width=32, dtype="int8")
    state, meta, dtype = average_files([tmp_path / "a.safetensors", tmp_path / "b.safetensors"], [1, 3])
    sa, _ = load_model_file(tmp_path / "a.safetensors")
    sb, _ = load_model_file(tmp_path / "b.safetensors")
    assert sa["1.weight"].dtype == torch.float32  # dequantised
    torch.testing.assert_close(state["1.weight"], 0.25 * sa["1.weight"] + 0.75 * sb["1.weight"], rtol=0, atol=1e-6)
    assert dtype == "int8" and [x["weight"] for x in meta["averaged"]] == [0.25, 0.75]
    assert not torch.equal(state["1.weight"], a["1.weight"]) and not torch.equal(state["1.weight"], b["1.weight"])


def test_cli_writes_a_loadable_average(invoke, tmp_path):
    _save(tmp_path / "a.safetensors", 1, dtype=torch.float16)
    _save(tmp_path / "b.safetensors", 2, dtype=torch.float16)
    out = tmp_path / "avg.safetensors"
    r = invoke("models", "average", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "-o", out, "--json")
    assert r.exit_code == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["save_dtype"] == "fp16" and row["weights"] == [0.5, 0.5]
    assert "BatchNorm" in r.stderr
    state, meta = load_model_file(out)
    sa, _ = load_model_file(tmp_path / "a.safetensors")
    sb, _ = load_model_file(tmp_path / "b.safetensors")
    torch.testing.assert_close(state["1.bias"].float(), ((sa["1.bias"].float() + sb["1.bias"].float()) / 2).half().float())
    assert read_meta(out)["headline"].startswith("average of 2 models")


@pytest.mark.parametrize("make, args, code, message", [
    (lambda p: _save(p / "b.safetensors", 2, width=8), ["b"], 1, "different networks"),
    (lambda p: _save(p / "b.safetensors", 2, task_note="x"), ["b"], 1, "task_note"),
    (lambda p: save_model(p / "b.safetensors", {"w": torch.zeros(2)}, {"task": "other"}), ["b"], 1, "'other' model"),
    (lambda p: None, [], 2, "at least two"),
    (lambda p: _save(p / "b.safetensors", 2), ["b", "--weights", "1,2,3"], 2, "3 weights for 2"),
    (lambda p: _save(p / "b.safetensors", 2), ["b", "--weights", "0,0"], 2, ">= 0 and not all 0"),
    (lambda p: _save(p / "b.safetensors", 2), ["b", "--save-dtype", "fp8"], 2, "--save-dtype"),
])
def test_bad_inputs_are_one_line(invoke, tmp_path, make, args, code, message):
    _save(tmp_path / "a.safetensors", 1)
    make(tmp_path)
    argv = [tmp_path / f"{x}.safetensors" if x == "b" else x for x in args]
    r = invoke("models", "average", tmp_path / "a.safetensors", *argv, "-o", tmp_path / "out.safetensors")
    assert r.exit_code == code and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_never_replaces_an_input_or_an_existing_file(invoke, tmp_path):
    _save(tmp_path / "a.safetensors", 1)
    _save(tmp_path / "b.safetensors", 2)
    before = (tmp_path / "a.safetensors").read_bytes()
    r = invoke("models", "average", tmp_path / "a.safetensors", tmp_path / "b.safetensors",
               "-o", tmp_path / "a.safetensors", "--overwrite")
    assert r.exit_code != 0 and "input" in r.stderr
    (tmp_path / "c.safetensors").write_bytes(b"keep")
    r = invoke("models", "average", tmp_path / "a.safetensors", tmp_path / "b.safetensors",
               "-o", tmp_path / "c.safetensors")
    assert r.exit_code != 0 and "--overwrite" in r.stderr
    assert (tmp_path / "a.safetensors").read_bytes() == before and (tmp_path / "c.safetensors").read_bytes() == b"keep"
