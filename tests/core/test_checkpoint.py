import errno
import pickle

import pytest
import torch

from dlkit.core.atomic import atomic_write, check_writable_dir
from dlkit.core.modelfile import FORMAT_VERSION, load_model_file, read_meta, save_model
from dlkit.core.state import load_state, save_state
from dlkit.core.errors import ModelFileError, OutputError


def _tied_state():
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    m = torch.nn.ModuleDict({"emb": emb, "head": head})
    return m


def test_round_trip_keeps_tensors_metadata_and_tied_weights(tmp_path):
    m = _tied_state()
    path = save_model(tmp_path / "m.safetensors", m.state_dict(), {"task": "lm", "config": {"a": 1}})
    tensors, meta = load_model_file(path, "lm")
    assert meta["task"] == "lm" and meta["config"] == {"a": 1} and meta["format"] == FORMAT_VERSION
    assert meta["aliases"] == {"head.weight": "emb.weight"}
    for k, v in m.state_dict().items():
        assert torch.equal(tensors[k], v)


def test_fp16_storage_halves_floats(tmp_path):
    sd = {"w": torch.randn(4, 4)}
    save_model(tmp_path / "m.safetensors", sd, {"task": "x"}, dtype=torch.float16)
    tensors, _ = load_model_file(tmp_path / "m.safetensors")
    assert tensors["w"].dtype == torch.float16
    assert torch.allclose(tensors["w"].float(), sd["w"], atol=1e-2)


def test_other_task_is_refused_naming_both(tmp_path):
    save_model(tmp_path / "g.safetensors", {"w": torch.zeros(2)}, {"task": "gan"})
    with pytest.raises(ModelFileError, match="'gan' model; this command needs a 'lm' model"):
        load_model_file(tmp_path / "g.safetensors", "lm")


def test_truncated_file_is_refused(tmp_path):
    p = save_model(tmp_path / "m.safetensors", {"w": torch.randn(100)}, {"task": "lm"})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 50])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model_file(p, "lm")


def test_pickle_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError, match="pickle"):
        load_model_file(p, "lm")
    torch.save({"w": torch.zeros(1)}, tmp_path / "t.pt")
    with pytest.raises(ModelFileError, match="pickle"):
        load_model_file(tmp_path / "t.pt", "lm")


@pytest.mark.parametrize("content", [b"", b"hello world, not a model", bytes(range(256)) * 4])
def test_random_and_empty_files_are_refused(tmp_path, content):
    p = tmp_path / "x.safetensors"
    p.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(p.name)):
        load_model_file(p, "lm")


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model_file(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="not a dlkit model"):
        load_model_file(tmp_path / "plain.safetensors")


def test_newer_format_is_refused(tmp_path, monkeypatch):
    import dlkit.core.modelfile as modelfile

    monkeypatch.setattr(modelfile, "FORMAT_VERSION", 99)
    save_model(tmp_path / "m.safetensors", {"w": torch.zeros(1)}, {"task": "lm"})
    monkeypatch.setattr(modelfile, "FORMAT_VERSION", 1)
    with pytest.raises(ModelFileError, match="upgrade dlkit"):
        read_meta(tmp_path / "m.safetensors")


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous good checkpoint")

    def disk_full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(target, disk_full)
    assert target.read_bytes() == b"previous good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # temp file cleaned up


def test_state_round_trip_is_weights_only(tmp_path):
    state = {"step": 7, "opt": {"lr": 0.1}, "rng": torch.get_rng_state(), "hist": [{"a": 1.0}]}
    p = save_state(tmp_path / "m.state.pt", state)
    back = load_state(p)
    assert back["step"] == 7 and torch.equal(back["rng"], state["rng"]) and back["hist"] == [{"a": 1.0}]

    import argparse

    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "evil.state.pt")  # any non-tensor object
    with pytest.raises(ModelFileError, match="cannot be read safely"):
        load_state(tmp_path / "evil.state.pt")


def test_unwritable_output_is_refused_even_as_root(tmp_path):
    """CI runs as root, which ignores permission bits: a path under a regular file fails for everyone."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder '.*file/sub'"):
        check_writable_dir(f / "sub")
    with pytest.raises(OutputError, match="could not write '.*file/m.safetensors'"):
        save_model(f / "m.safetensors", {"w": torch.zeros(1)}, {"task": "lm"})
    assert f.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]
