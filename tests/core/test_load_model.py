"""The one model loader: metadata checks, config-vs-tensors before building, typed configs, training state."""

import json
import resource
import struct
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

from dlkit.core.loader import load_model
from dlkit.core.modelfile import check_shapes, read_header, read_meta, save_model, stored_shapes
from dlkit.core.state import STATE_FORMAT, check_resume, load_state, save_state
from dlkit.core.config import config_from_dict
from dlkit.core.errors import ModelFileError, UsageError


@dataclass
class NetConfig:
    width: int = 4
    depth: int = 2
    scale: float = 1.0
    act: str = "relu"
    tied: bool = True
    note: Optional[str] = None


class Net(torch.nn.Module):
    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.emb = torch.nn.Embedding(10, cfg.width)
        self.layers = torch.nn.ModuleList(torch.nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth))
        self.head = torch.nn.Linear(cfg.width, 10, bias=False)
        if cfg.tied:
            self.head.weight = self.emb.weight
        self.register_buffer("table", torch.zeros(3), persistent=False)


def build(meta):
    return Net(config_from_dict(NetConfig, meta.get("config")))


def _save(path, cfg=NetConfig(), meta_cfg=None, dtype=None, **meta):
    torch.manual_seed(0)
    net = Net(cfg)
    c = meta_cfg if meta_cfg is not None else cfg.__dict__
    save_model(path, net.state_dict(), {"task": "toy", "config": c, **meta}, dtype=dtype)
    return net


def test_load_model_round_trip_tied_fp16_eval_and_meta(tmp_path):
    net = _save(tmp_path / "m.safetensors", dtype=torch.float16)
    model, meta = load_model(tmp_path / "m.safetensors", "toy", build)
    assert not model.training and meta["name"] == "m" and meta["path"].endswith("m.safetensors")
    assert model.head.weight is model.emb.weight and model.emb.weight.dtype == torch.float32
    torch.testing.assert_close(model.emb.weight, net.emb.weight, atol=1e-3, rtol=0)


def test_int8_file_is_smaller_loads_back_close_and_hides_its_scales(tmp_path, monkeypatch):
    import dlkit.core.modelfile as mf
    from dlkit.core.zoo import describe

    monkeypatch.setattr(mf, "INT8_MIN_ELEMENTS", 16)  # the toy's 10x64 matrices count as large
    cfg = NetConfig(width=64, tied=False)
    net = _save(tmp_path / "q.safetensors", cfg=cfg, dtype="int8")
    _save(tmp_path / "h.safetensors", cfg=cfg, dtype="fp16")
    assert (tmp_path / "q.safetensors").stat().st_size < 0.6 * (tmp_path / "h.safetensors").stat().st_size
    header = read_header(tmp_path / "q.safetensors")
    assert header["layers.0.weight"]["dtype"] == "I8" and header["layers.0.bias"]["dtype"] == "F16"
    assert "layers.0.weight.int8_scale" not in stored_shapes(tmp_path / "q.safetensors")
    model, _ = load_model(tmp_path / "q.safetensors", "toy", build)
    for name, w in net.state_dict().items():
        got = model.state_dict()[name]
        step = w.abs().amax(dim=-1, keepdim=True) / 127 if w.dim() == 2 else 1e-3 * w.abs().max()
        assert got.dtype == torch.float32 and ((got - w).abs() <= step / 2 + 1e-3 * w.abs()).all(), name
    assert describe(tmp_path / "q.safetensors", "here")["parameters"] == sum(v.numel() for v in net.state_dict().values())


def test_replace_meta_changes_the_metadata_and_keeps_the_stored_tensors(tmp_path, monkeypatch):
    import dlkit.core.modelfile as mf
    from safetensors.torch import load_file

    monkeypatch.setattr(mf, "INT8_MIN_ELEMENTS", 16)
    path = tmp_path / "q.safetensors"
    _save(path, cfg=NetConfig(width=64, tied=True), dtype="int8")
    before, meta = load_file(path), read_meta(path)
    assert meta["int8"] and meta["aliases"]  # both kinds of bookkeeping the rewrite must keep
    mf.replace_meta(path, {**meta, "headline": "new figure", "metrics": {"fid": 1.5}})
    after = load_file(path)
    assert before.keys() == after.keys()
    assert all(after[k].dtype == t.dtype and torch.equal(after[k], t) for k, t in before.items())
    assert read_meta(path) == {**meta, "headline": "new figure", "metrics": {"fid": 1.5}}
    model, _ = load_model(path, "toy", build)  # still a model file: the int8 list and the tied tensors resolve
    assert torch.equal(model.head.weight, model.emb.weight)


def test_an_int8_list_naming_a_float_tensor_is_one_line(tmp_path):
    meta = '{"task": "toy", "int8": ["w"]}'
    p = _raw_file(tmp_path / "m.safetensors", {"__metadata__": {"dlkit": meta},
                                                "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(ModelFileError, match="int8 list names tensors stored otherwise"):
        read_meta(p)


def test_bundled_names_resolve(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    _save(tmp_path / "models" / "toy-a.safetensors")
    model, meta = load_model("toy-a", "toy", build)
    assert meta["name"] == "toy-a"
    with pytest.raises(ModelFileError, match="no model named 'toy-b'"):
        load_model("toy-b", "toy", build)


def test_a_config_claiming_a_huge_model_is_refused_before_memory_grows(tmp_path):
    _save(tmp_path / "m.safetensors", meta_cfg={**NetConfig().__dict__, "depth": 10_000_000, "width": 4})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelFileError, match="far larger than the .* values the file stores"):
        load_model(tmp_path / "m.safetensors", "toy", build)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300  # 10M layers would be gigabytes of modules


@pytest.mark.parametrize("change, message", [
    ({"width": 8}, "is stored as \\[10, 4\\] but its config needs \\[10, 8\\]"),
    ({"depth": 1}, "stored tensor\\(s\\) its config does not use"),
    ({"depth": 3}, "tensor\\(s\\) its config needs are missing"),
    ({"depth": "2"}, "field 'depth' should be int, not str"),
    ({"depth": 2.5}, "field 'depth' should be int"),
    ({"tied": 1}, "field 'tied' should be bool"),
    ({"colour": "red"}, "unknown field"),
    ({"width": -3}, "cannot be built"),
])
def test_config_that_does_not_fit_the_tensors_is_one_line(tmp_path, change, message):
    _save(tmp_path / "m.safetensors", meta_cfg={**NetConfig().__dict__, **change})
    with pytest.raises(ModelFileError, match=message) as e:
        load_model(tmp_path / "m.safetensors", "toy", build)
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def _raw_file(path, header: dict, data: bytes = b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("meta, message", [
    ("{not json", "broken dlkit metadata \\(not JSON"),
    ("[1, 2]", "a list, not a table"),
    ('{"task": "toy", "format": "one"}', "format 'one' is not a number"),
    ('{"task": 7}', "task is not a name"),
    ('{"task": "toy", "aliases": {"b": "nope"}}', "aliases name tensors"),
])
def test_broken_metadata_is_one_line(tmp_path, meta, message):
    p = _raw_file(tmp_path / "m.safetensors", {"__metadata__": {"dlkit": meta},
                                                "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)
    with pytest.raises(ModelFileError, match=message):
        read_meta(p)


@pytest.mark.parametrize("entry", [[1, 2], "x", {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]},
                                   {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, {"shape": [1]}])
def test_malformed_header_entries_are_one_line(tmp_path, entry):
    p = _raw_file(tmp_path / "m.safetensors", {"__metadata__": {"dlkit": "{}"}, "w": entry}, b"\0" * 4)
    with pytest.raises(ModelFileError, match="header entry 'w' is malformed"):
        read_header(p)
    p = _raw_file(tmp_path / "n.safetensors", {"__metadata__": ["x"]})
    with pytest.raises(ModelFileError, match="metadata is not a table"):
        read_header(p)


def test_check_shapes_lists_the_first_difference_of_each_kind():
    check_shapes({"a": (2, 3)}, {"a": [2, 3]})
    with pytest.raises(ModelFileError, match="'a' is stored as \\[2, 4\\] but its config needs \\[2, 3\\]; 1 tensor"):
        check_shapes({"a": (2, 3), "b": (1,)}, {"a": (2, 4)}, "f")


def test_stored_shapes_include_aliases(tmp_path):
    _save(tmp_path / "m.safetensors")
    shapes = stored_shapes(tmp_path / "m.safetensors")
    assert shapes["head.weight"] == shapes["emb.weight"] == (10, 4)


def test_config_from_dict_types():
    cfg = config_from_dict(NetConfig, {"width": 3, "scale": 2, "note": None})
    assert cfg.width == 3 and cfg.scale == 2.0 and isinstance(cfg.scale, float)
    assert config_from_dict(NetConfig, {"colour": 1}, allow_unknown=True) == NetConfig()
    for bad, msg in [(None, "no config"), ([1], "list, not a table"), ({"note": 3}, "'note' should be")]:
        with pytest.raises(ModelFileError, match=msg):
            config_from_dict(NetConfig, bad)


# ------------------------------------------------------------------ training state
def test_state_is_versioned_and_typed(tmp_path):
    p = save_state(tmp_path / "s.pt", {"step": 3, "model": {}}, task="toy")
    s = load_state(p, "toy", required=("step", "model"))
    assert s["state_format"] == STATE_FORMAT and s["task"] == "toy"
    with pytest.raises(ModelFileError, match="saved by a 'toy' run; a 'gan' run cannot resume it"):
        load_state(p, "gan")
    with pytest.raises(ModelFileError, match="incomplete \\(no optimizer\\)"):
        load_state(p, "toy", required=("optimizer",))
    torch.save({"step": 1, "state_format": 99}, tmp_path / "new.pt")
    with pytest.raises(ModelFileError, match="upgrade dlkit"):
        load_state(tmp_path / "new.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ModelFileError, match="not a dlkit training state"):
        load_state(tmp_path / "list.pt")
    torch.save({"step": 1}, tmp_path / "old.pt")  # states from before versioning still load
    assert load_state(tmp_path / "old.pt", "toy")["step"] == 1


def test_unsafe_state_never_suggests_weights_only_false(tmp_path):
    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError) as e:
        load_state(tmp_path / "evil.pt")
    assert "weights_only" not in str(e.value) and "never unpickles" in str(e.value) and "\n" not in str(e.value)


def test_check_resume_names_each_differing_option():
    check_resume({"preset": "tiny", "block_size": None}, {"preset": "tiny", "block_size": None}, ["preset", "block_size"])
    check_resume({}, {"preset": "x"}, ["preset"])  # an old state without the key is not compared
    with pytest.raises(UsageError, match="--preset small \\(the run used tiny\\); --block-size 64 \\(the run used \\(default\\)\\)"):
        check_resume({"preset": "tiny", "block_size": None}, {"preset": "small", "block_size": 64},
                          ["preset", "block_size"], "runs/x")


def test_model_arch_reads_names_and_paths_and_is_none_for_what_it_cannot_read(tmp_path):
    from dlkit.core.loader import model_arch

    assert model_arch("moving-mnist-mse", "frames") == "simvp"  # a bundled name, not only a path
    assert model_arch("cifar10-dcgan", "gan") == "dcgan"
    p = tmp_path / "m.safetensors"
    save_model(p, {"w": torch.zeros(2)}, {"task": "toy", "arch": "tiny"})
    assert model_arch(p, "toy") == "tiny"
    assert model_arch(p, "gan") is None  # another task's file
    assert model_arch(tmp_path / "missing.safetensors", "toy") is None and model_arch(None, "toy") is None
