"""caption / caption-train on hostile inputs: every case is one sentence, nothing of the user's is lost, memory
follows the real input, and no library's unsafe advice reaches the user."""

import os
import shutil
import struct
import zlib

import pytest
import torch

from dlkit.tasks.caption.data import make_shapes_dataset

TINY = ["--encoder", "tiny-cnn", "--preset", "tiny", "--min-count", "1", "--val-images", "4", "--epochs", "1",
        "--batch-size", "8", "--no-feature-cache", "--quiet"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny attention captioner (1 epoch: the tests need a valid file, not good captions)."""
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.train import TrainConfig, train

    root = tmp_path_factory.mktemp("cap")
    data = make_shapes_dataset(root / "shapes", n=16)
    cfg = TrainConfig(data=str(data), out=str(root / "run"), preset="tiny", encoder="tiny-cnn", min_count=1,
                      val_images=4, epochs=1, batch_size=8, feature_cache="")
    train(cfg, make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
    return root / "run" / "model.safetensors", root / "shapes" / "images"


def _one_line(r, code):
    assert r.exit_code == code, r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels (a decompression bomb as far as any reader can tell)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- outputs
def test_attention_plot_never_replaces_the_input_photo(invoke, model, tmp_path):
    path, images = model
    photos = tmp_path / "photos"
    shutil.copytree(images, photos)
    x = photos / "img000.png"
    before = x.read_bytes()
    r = invoke("caption", x, "--model", path, "--attention-plot", photos)
    _one_line(r, 1)
    assert "is an input file" in r.stderr and x.read_bytes() == before and r.stdout == ""
    r = invoke("caption", x, "--model", path, "--attention-plot", photos, "--overwrite")  # not even so
    assert r.exit_code == 1 and x.read_bytes() == before
    figs = tmp_path / "figs"
    assert invoke("caption", x, "--model", path, "--attention-plot", figs).exit_code == 0
    r = invoke("caption", x, "--model", path, "--attention-plot", figs)
    _one_line(r, 1)
    assert "already exists; pass --overwrite" in r.stderr
    assert invoke("caption", x, "--model", path, "--attention-plot", figs, "--overwrite").exit_code == 0


def test_a_huge_stdin_line_does_not_flood_stderr(invoke, model):
    path, images = model
    good = images / "img001.png"
    r = invoke("caption", "-", "--model", path, input="a" * 10**6 + "\n" + str(good) + "\n")
    assert r.exit_code == 0 and r.stdout.strip()
    assert len(r.stderr) < 500 and "longer than 4096 characters" in r.stderr
    r = invoke("caption", "b" * 5000, "--model", path)  # a long argument: one short line, exit 1
    assert r.exit_code == 1 and len(r.stderr) < 700 and "(5,000 characters)" in r.stderr


# ---------------------------------------------------------------- crafted model files
def _recraft(path, out, edit):
    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(path, "caption")
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases", "path")}
    edit(meta)
    save_model(out, tensors, meta)
    return out


@pytest.mark.parametrize("field, value, needle", [
    ("size", 60000, "size 60000 is outside 16..1024"),
    ("std", [0.0, 0.25, 0.25], "std [0.0, 0.25, 0.25] has a value <= 0"),
    ("mean", [float("nan")] * 3, "mean must be three finite numbers"),
    ("channels", 0, "channels 0 is outside"),
    ("name", "torchvision:resnet18", "random weights"),  # not stored, not pretrained
])
def test_crafted_encoder_metadata_is_refused_before_building(invoke, model, tmp_path, field, value, needle):
    path, images = model

    def edit(meta):
        meta["encoder"][field] = value
        if field == "name":
            meta["encoder"].update(stored=False, pretrained=False)

    bad = _recraft(path, tmp_path / "bad.safetensors", edit)
    r = invoke("caption", images / "img000.png", "--model", bad)
    _one_line(r, 1)
    assert needle in r.stderr


def test_crafted_max_len_is_refused(invoke, model, tmp_path):
    path, images = model
    bad = _recraft(path, tmp_path / "bad.safetensors", lambda m: m["config"].update(max_len=10**8))
    r = invoke("caption", images / "img000.png", "--model", bad)
    _one_line(r, 1)
    assert "max_len 100000000 is outside 2..200" in r.stderr


def test_model_fifo_is_refused_with_exit_2(invoke, model, tmp_path):
    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)
    r = invoke("caption", model[1] / "img000.png", "--model", fifo)
    _one_line(r, 2)
    assert "FIFO" in r.stderr


# ---------------------------------------------------------------- caption-train inputs
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo PWNED",))


def test_pickled_encoder_weights_never_relay_torch_advice(invoke, model, tmp_path, capfd):
    data = make_shapes_dataset(tmp_path / "d", n=8)
    torch.save({"w": torch.zeros(2), "evil": _Evil()}, tmp_path / "evil.pt")
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o", *TINY, "--encoder-weights", tmp_path / "evil.pt")
    _one_line(r, 1)
    assert "never unpickles" in r.stderr
    err = r.stderr + capfd.readouterr().err
    for advice in ("weights_only", "will likely succeed", "pickle protocol", "PWNED", "allow_pickle"):
        assert advice not in err


def test_nonfinite_encoder_weights_are_refused(invoke, tmp_path):
    from safetensors.torch import save_file

    data = make_shapes_dataset(tmp_path / "d", n=8)
    save_file({"body.0.weight": torch.full((16, 3, 3, 3), float("nan"))}, str(tmp_path / "w.safetensors"))
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o", *TINY, "--encoder-weights",
               tmp_path / "w.safetensors")
    _one_line(r, 1)
    assert "NaN or inf" in r.stderr


@pytest.mark.parametrize("text, needle", [
    ('image,caption\nimg000.png,"a red circle\nimg001.png,a cat\nimg002.png,a dog\n', "is a quote left open"),
    ("image,caption\nimg000.png," + "x" * 200_000 + "\n", "longer than 131,072 characters"),
    ("image,caption\nimg000.png,caf\xe9 au lait\n", "not UTF-8"),
])
def test_caption_file_rows_are_never_dropped_silently(invoke, tmp_path, text, needle):
    data = make_shapes_dataset(tmp_path / "d", n=8)
    data.write_bytes(text.encode("latin-1"))
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o", *TINY)
    _one_line(r, 1)
    assert needle in r.stderr


def test_pretrain_text_in_latin1_or_another_language_is_refused(invoke, tmp_path):
    data = make_shapes_dataset(tmp_path / "d", n=8)
    (tmp_path / "latin.txt").write_bytes("un caf\xe9 noir\n".encode("latin-1") * 50)
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o", *TINY, "--pretrain-text", tmp_path / "latin.txt")
    _one_line(r, 1)
    assert "not UTF-8" in r.stderr
    (tmp_path / "fr.txt").write_text("le chien noir court dans le jardin\n" * 300)
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o2", *TINY, "--pretrain-text", tmp_path / "fr.txt")
    _one_line(r, 1)
    assert "only 0 of its 300 sentences" in r.stderr


def test_stream_captions_and_a_bomb_photo_among_the_training_images(invoke, tmp_path):
    """caption-train --data <(...) reads the stream; one bomb photo is named in a warning and skipped."""
    data = make_shapes_dataset(tmp_path / "d", n=16)
    (tmp_path / "d" / "images" / "img003.png").write_bytes(png_header(100_000, 100_000))
    r_fd, w_fd = os.pipe()
    os.write(w_fd, data.read_bytes())
    os.close(w_fd)
    try:
        r = invoke("caption-train", "--data", f"/dev/fd/{r_fd}", "--images", tmp_path / "d" / "images",
                   "--out", tmp_path / "o", *TINY[:-1])
    finally:
        os.close(r_fd)
    assert r.exit_code == 0, r.stderr
    assert "img003.png' is 100000x100000" in r.stderr and "1 of 16 images" in r.stderr
    assert (tmp_path / "o" / "model.safetensors").exists()


@pytest.mark.parametrize("opt, value, bound", [
    ("--image-size", 100000, "1,024"), ("--hidden", 200000, "4,096"), ("--embed", 100000000, "4,096"),
    ("--max-len", 100000000, "200"),
])
def test_size_options_have_upper_bounds_with_a_reason(invoke, tmp_path, opt, value, bound):
    data = make_shapes_dataset(tmp_path / "d", n=8)
    r = invoke("caption-train", "--data", data, "--out", tmp_path / "o", *TINY, opt, value)
    _one_line(r, 2)
    assert f"over the limit of {bound}:" in r.stderr


def test_threads_beyond_the_cores_are_capped(invoke, model):
    from dlkit.core.threads import available_cores

    r = invoke("caption", model[1] / "img000.png", "--model", model[0], "--threads", "100000")
    assert r.exit_code == 0 and r.stdout.strip()
    assert f"using {available_cores()}" in r.stderr and torch.get_num_threads() <= available_cores()
