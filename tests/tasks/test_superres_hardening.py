"""Issue 9 for images and superres: a test per class (bounded memory, batch policy, EXIF, output names, closed
stdout, panel, runtime options, two-optimizer AMP, training guards). Tiny images and models made here."""

import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlkit.core.modelfile import save_model
from dlkit.core.errors import DataError, TrainingDiverged
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.superres import figures, infer
from dlkit.tasks.superres.data import block_images, read_hr_images
from dlkit.tasks.superres.model import SRConfig, build_model
from dlkit.tasks.superres.train import TrainConfig, gan_step, train

TINY = dict(n_blocks=2, channels=16, bn=False, kernel=3)


def png_bomb(w=10000, h=9500) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(range(24)), 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(SRConfig(scale=2, **TINY))
    path = tmp_path_factory.mktemp("srh") / "tiny-x2.safetensors"
    save_model(path, m.state_dict(), {"task": "superres", "arch": "srresnet", "config": {"scale": 2, **TINY},
                                      "scale": 2, "headline": "test"})
    return path


@pytest.fixture
def mixed_dir(tmp_path):
    """Good images with a decompression bomb, a broken file and images too small for SSIM among them."""
    d = tmp_path / "mixed"
    d.mkdir()
    for name, img in block_images(3, 32, seed=1):
        Image.fromarray(img).save(d / name)
    (d / "bomb.png").write_bytes(png_bomb())
    (d / "broken.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(d / "one.png")
    Image.new("RGB", (300, 7)).save(d / "thin.png")
    return d


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# ------------------------------------------------------------------ memory follows the real input
def test_bomb_is_refused_before_decoding_with_max_pixels_in_the_message(invoke, model_file, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb())
    assert len(bomb.read_bytes()) == 89  # issue 9's file
    r = invoke("superres", bomb, "-o", tmp_path / "b4.png", "-m", model_file)
    assert r.exit_code == 1 and "10000x9500" in r.stderr and "before decoding" in r.stderr
    assert "unexpected" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "b4.png").exists()
    Image.fromarray(block_images(1, 20)[0][1]).save(tmp_path / "ok.png")
    r = invoke("superres", tmp_path / "ok.png", "-o", tmp_path / "ok4.png", "-m", model_file, "--max-pixels", "399")
    assert r.exit_code == 1 and "over the limit of 399 px" in r.stderr
    r = invoke("superres", tmp_path / "ok.png", "-o", tmp_path / "ok4.png", "-m", model_file, "--max-pixels", "0")
    assert r.exit_code == 2  # a range check in Typer


def test_automatic_tiles_give_exactly_the_untiled_output():
    torch.manual_seed(0)
    m = build_model(SRConfig(scale=2, **TINY)).eval()
    lr = (np.random.default_rng(0).random((45, 37, 3)) * 255).astype(np.uint8)
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    ctx = infer.context_pixels(m)
    assert ctx >= 2 * 2 + 1 + 1  # head, 2 blocks x 2 convs, body tail, upsampler, tail
    tile = infer.auto_tile(m, 45, 37, 2, rt.device, ctx, budget=20 * infer.bytes_per_pixel(m, 2) * 20)
    assert 0 < tile < 37
    assert infer.auto_tile(m, 45, 37, 2, rt.device, ctx, budget=10**12) == 0  # fits: whole image
    whole = infer.upscale(m, lr, 2, rt, tile=0)
    seen = []

    class Bar:
        def __init__(self, total):
            seen.append(total)

        def __enter__(self):
            return lambda n=1: seen.append("tick")

        def __exit__(self, *a):
            pass

    tiled = infer.upscale(m, lr, 2, rt, tile=8, progress=Bar)  # default overlap: the receptive field
    np.testing.assert_array_equal(tiled, whole)
    assert seen[0] == len(infer.tiles(45, 37, 8, ctx)) and seen.count("tick") == seen[0]


def test_bicubic_baseline_never_holds_a_float64_copy_of_the_output():
    from dlkit.tasks.superres import protocol

    a = (np.random.default_rng(1).random((23, 31, 3)) * 255).astype(np.uint8)
    whole = protocol.imresize(a, 4)
    old = protocol._CHUNK_VALUES
    try:
        protocol._CHUNK_VALUES = 500  # chunks of a few lines
        np.testing.assert_array_equal(protocol.imresize(a, 4), whole)
        np.testing.assert_array_equal(protocol.imresize(a, 1 / 4), imr(a))
    finally:
        protocol._CHUNK_VALUES = old


def imr(a):
    from dlkit.tasks.superres.protocol import imresize

    return imresize(a, 1 / 4)


# ------------------------------------------------------------------ batch modes finish the good work
def test_folder_with_a_bomb_writes_every_good_image_and_exits_1(invoke, model_file, mixed_dir, tmp_path):
    r = invoke("superres", mixed_dir, "-o", tmp_path / "out", "-m", model_file, "--json")
    assert r.exit_code == 1, r.stderr
    recs = records(r.stdout)
    written = sorted(Path(x["output"]).name for x in recs if "output" in x)
    assert written == ["blocks0.png", "blocks1.png", "blocks2.png", "one.png", "thin.png"]
    errors = {Path(x["path"]).name: x["error"] for x in recs if x.get("event") == "error"}
    assert set(errors) == {"bomb.png", "broken.png"} and "10000x9500" in errors["bomb.png"]
    assert "2 of 7 images failed" in r.stderr and "unexpected" not in r.stderr
    for name in ("bomb.png", "broken.png"):
        assert f"{name}: " in r.stderr  # each a warning naming it


def test_eval_skips_bad_and_too_small_images_with_a_sentence_each(invoke, model_file, mixed_dir):
    r = invoke("superres", "--eval", mixed_dir, "-m", model_file)
    assert r.exit_code == 1
    assert "3 images" in r.stdout and "tiny-x2" in r.stdout  # the table over the good ones
    for name in ("bomb.png", "broken.png", "one.png", "thin.png"):
        assert name in r.stderr
    assert "too small to measure at x2" in r.stderr and "win_size" not in r.stderr and "unexpected" not in r.stderr
    r = invoke("superres", "--eval", mixed_dir, "-m", model_file, "--json")
    recs = records(r.stdout)
    assert {Path(x["path"]).name for x in recs if x.get("event") == "error"} == {"bomb.png", "broken.png", "one.png",
                                                                                  "thin.png"}
    assert [x for x in recs if "results" in x][0]["images"] == 3


def test_compare_with_an_original_too_small_is_one_sentence(invoke, model_file, tmp_path):
    Image.new("RGB", (300, 8)).save(tmp_path / "thin.png")
    r = invoke("superres", "--hr", tmp_path / "thin.png", "--compare", tmp_path / "p.png", "-m", model_file)
    assert r.exit_code == 1 and "too small to measure" in r.stderr and "unexpected" not in r.stderr


@pytest.mark.parametrize("as_tar", [False, True])
def test_training_data_skips_bad_files_with_a_warning(mixed_dir, tmp_path, as_tar):
    src = mixed_dir
    if as_tar:
        src = tmp_path / "data.tar"
        with tarfile.open(src, "w") as tar:
            for f in sorted(mixed_dir.iterdir()):
                tar.add(f, arcname=f"train/{f.name}")
    warnings = []
    rep = Reporter(quiet=True)
    rep.warn = warnings.append
    images, outcome = read_hr_images(src, rep, min_size=24)
    assert [Path(n).name for n, _ in images] == ["blocks0.png", "blocks1.png", "blocks2.png"]
    assert sorted(Path(n.split(":")[-1]).name for n, _ in outcome.failed) == ["bomb.png", "broken.png", "one.png",
                                                                             "thin.png"]
    assert len(warnings) == 4 and any("bomb.png" in w and "before decoding" in w for w in warnings)
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    cfg = TrainConfig(data=str(src), out=str(tmp_path / f"run{as_tar}"), preset="tiny", scale=2, patch=8,
                      batch_size=2, steps=2, warmup=1, eval_every=2, val_split=1)
    res = train(cfg, rt, rep)
    assert Path(res.model_path).exists()


def test_training_data_with_no_usable_image_is_one_line(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(png_bomb())
    with pytest.raises(DataError, match="no usable images"):
        read_hr_images(tmp_path / "d")


# ------------------------------------------------------------------ EXIF orientation
def test_rotated_phone_photo_comes_out_upright(invoke, model_file, tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = 255  # stored landscape: white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the photo is portrait, white on top
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=100)
    r = invoke("superres", tmp_path / "phone.jpg", "-o", tmp_path / "up.png", "-m", "bicubic", "--scale", "2")
    assert r.exit_code == 0, r.stderr
    out = Image.open(tmp_path / "up.png")
    assert out.size == (20, 40) and out.getexif().get(0x0112, 1) == 1
    g = np.asarray(out.convert("L")).astype(int)
    assert g[:12].mean() > 200 and g[-12:].mean() < 50


# ------------------------------------------------------------------ output names
def test_several_inputs_and_a_file_like_out_are_refused(invoke, model_file, tmp_path):
    for n in "ab":
        Image.fromarray(block_images(1, 16)[0][1]).save(tmp_path / f"{n}.png")
    r = invoke("superres", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out" / "two.png", "-m", model_file)
    assert r.exit_code == 2 and "two.png" in r.stderr and "folder" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
    r = invoke("superres", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "out", "-m", model_file)
    assert r.exit_code == 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]


# ------------------------------------------------------------------ a closed stdout
def test_closed_stdout_keeps_writing_files_and_exits_non_zero(model_file, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name, img in block_images(4, 16, seed=2):
        Image.fromarray(img).save(src / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "dlkit", "superres", str(src), "-o", str(tmp_path / "out"), "-m",
                          str(model_file), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    p.stdout.close()  # the reader left before the first result (`| head -0`)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 141, err.decode()
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == [f"blocks{i}.png" for i in range(4)]
    assert b"Traceback" not in err


# ------------------------------------------------------------------ the panel
def test_panel_has_a_crop_row_and_claims_no_metric_without_the_original(model_file, tmp_path, monkeypatch):
    import matplotlib.figure

    titles = []
    orig = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **k: (titles.append(t), orig(self, t, **k))[1])
    hr = block_images(1, 48, seed=4)[0][1]
    Image.fromarray(hr).save(tmp_path / "hr.png")
    Image.fromarray(hr[::2, ::2]).save(tmp_path / "lr.png")
    nets, _ = infer.load_models([str(model_file)], None)
    res = figures.compare(nets, 2, tmp_path / "p.png", lr_path=tmp_path / "lr.png")
    assert res["metrics"] == {} and len(res["crop"]) == 4
    assert "no PSNR" in titles[-1] and "dB" not in titles[-1]
    res = figures.compare(nets, 2, tmp_path / "q.png", hr_path=tmp_path / "hr.png")
    assert set(res["metrics"]) == {"bicubic", "tiny-x2"} and "PSNR / SSIM on Y" in titles[-1]
    w, h = Image.open(tmp_path / "q.png").size
    assert h > w / 3 * 1.5  # two rows of 3 square images, not one
    with pytest.raises(Exception, match="cannot write a panel"):
        figures.compare(nets, 2, tmp_path / "p.xyz", hr_path=tmp_path / "hr.png")


# ------------------------------------------------------------------ one runtime: --precision and --overlap honoured
def test_eval_and_compare_use_the_runtime_and_overlap(monkeypatch):
    m = build_model(SRConfig(scale=2, **TINY)).eval()
    rt = make_runtime("cpu", "bf16", 0, distributed=False)
    calls = []
    real = rt.autocast
    monkeypatch.setattr(rt, "autocast", lambda: (calls.append(1), real())[1])
    hr = block_images(1, 40, seed=6)[0][1]
    seen = []
    real_tiles = infer.tiles
    monkeypatch.setattr(infer, "tiles", lambda h, w, t, o: (seen.append(o), real_tiles(h, w, t, o))[1])
    out = infer.evaluate_image(hr, 2, {"m": m}, rt, tile=8, overlap=3)
    assert calls and seen == [3] and set(out) == {"bicubic", "m"}


def test_cli_threads_and_precision_options(invoke, model_file, tmp_path):
    Image.fromarray(block_images(1, 16)[0][1]).save(tmp_path / "a.png")
    r = invoke("superres", tmp_path / "a.png", "-o", tmp_path / "b.png", "-m", model_file, "--threads", "1",
               "--precision", "bf16", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    r = invoke("superres", tmp_path / "a.png", "-o", tmp_path / "b.png", "-m", model_file, "--threads", "0")
    assert r.exit_code == 2


# ------------------------------------------------------------------ SRGAN: one scaler update per iteration
def test_srgan_updates_the_loss_scaler_once_per_iteration():
    from dlkit.tasks.superres.losses import make_content_loss
    from dlkit.tasks.superres.model import Discriminator

    torch.manual_seed(0)
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    rt.scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**8)  # exercise scale/unscale/step for real
    updates = []
    real = rt.scaler.update
    rt.scaler.update = lambda *a, **k: (updates.append(1), real(*a, **k))[1]
    gen, disc = build_model(SRConfig(scale=2, **TINY)), Discriminator(channels=4)
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3)
    content = make_content_loss("l1", None, rt.device, Reporter(quiet=True))
    cfg = TrainConfig(data="-", arch="srgan")
    before = [p.clone() for p in gen.parameters()]
    for _ in range(3):
        out = gan_step(gen, disc, content, opt_g, opt_d, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), cfg, rt)
    assert len(updates) == 3  # not 6
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.values())  # no .item() per step
    assert any(not torch.equal(a, b) for a, b in zip(before, gen.parameters()))


# ------------------------------------------------------------------ training guards
def test_train_refuses_a_used_out_and_a_resume_with_other_shapes(invoke, tmp_path):
    d = tmp_path / "hr"
    d.mkdir()
    for name, img in block_images(4, 32, seed=3):
        Image.fromarray(img).save(d / name)
    args = ["superres-train", "--data", d, "--preset", "tiny", "--scale", "2", "--patch", "8", "--batch-size", "2",
            "--steps", "2", "--eval-every", "2", "--val-split", "1", "--out", tmp_path / "run", "--device", "cpu", "-q"]
    assert invoke(*args).exit_code == 0
    r = invoke(*args)
    assert r.exit_code == 1 and "--resume" in r.stderr and "--overwrite" in r.stderr
    assert invoke(*args, "--overwrite").exit_code == 0
    r = invoke(*[a if a != "tiny" else "small" for a in args], "--resume")
    assert r.exit_code == 2 and "--preset small" in r.stderr
    r = invoke(*args[:-2], "--steps", "1", "--lr", "0", "--overwrite")
    assert r.exit_code == 2


def test_nan_loss_stops_training_with_one_line(tmp_path, monkeypatch):
    d = tmp_path / "hr"
    d.mkdir()
    for name, img in block_images(3, 32, seed=3):
        Image.fromarray(img).save(d / name)
    monkeypatch.setattr("dlkit.tasks.superres.train.pixel_loss",
                        lambda kind: lambda a, b: (a - b).abs().mean() * float("nan"))
    cfg = TrainConfig(data=str(d), out=str(tmp_path / "run"), preset="tiny", scale=2, patch=8, batch_size=2, steps=6,
                      warmup=1, eval_every=100, log_every=2)
    with pytest.raises(TrainingDiverged, match="at step 2"):
        train(cfg, make_runtime("cpu", "fp32", 0, distributed=False), Reporter(quiet=True))
