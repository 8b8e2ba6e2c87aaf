"""Super-resolution: model contract, learning, tiling, model files and resume, CLI end to end (CPU, tiny data)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import StopAt
from PIL import Image

from dlkit.core.modelfile import load_model_file, save_model
from dlkit.core.errors import Interrupted, ModelFileError, UsageError
from dlkit.tasks.superres.protocol import imresize, sr_metrics
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.superres import infer
from dlkit.tasks.superres.data import PatchSampler, block_images, make_pairs, to_tensor, to_uint8
from dlkit.tasks.superres.model import Discriminator, SRConfig, build_model
from dlkit.tasks.superres.train import TrainConfig, train

TINY = dict(n_blocks=2, channels=16, bn=False, kernel=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def quiet():
    return Reporter(quiet=True)


@pytest.fixture
def hr_dir(tmp_path):
    d = tmp_path / "hr"
    d.mkdir()
    for name, img in block_images(6, 48, seed=3):
        Image.fromarray(img).save(d / name)
    return d


def tiny_cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", scale=2, patch=12, batch_size=4, steps=6, lr=2e-3,
                warmup=2, eval_every=3, val_split=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ 1. model contract
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("bn", [True, False])
def test_generator_shapes_gradients_and_determinism(scale, bn):
    torch.manual_seed(0)
    cfg = SRConfig(scale=scale, n_blocks=2, channels=8, bn=bn, kernel=9 if bn else 3)
    m = build_model(cfg)
    x = torch.rand(2, 3, 7, 5)
    y = m(x)
    assert y.shape == (2, 3, 7 * scale, 5 * scale)
    y.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    torch.manual_seed(0)
    m2 = build_model(cfg)
    torch.testing.assert_close(m2(x), m(x), rtol=0, atol=0)


def test_discriminator_takes_any_patch():
    d = Discriminator(channels=8)
    assert d(torch.rand(2, 3, 48, 48)).shape == (2,)
    assert d(torch.rand(1, 3, 96, 64)).shape == (1,)


def test_unsupported_scale_is_refused():
    with pytest.raises(ValueError, match="scale 5"):
        build_model(SRConfig(scale=5))


# ------------------------------------------------------------------ 2. learning
def test_tiny_model_beats_bicubic_after_short_training():
    torch.manual_seed(0)
    pairs = make_pairs(block_images(8, 64, seed=1), 2)
    test = make_pairs(block_images(2, 64, seed=99), 2)
    m = build_model(SRConfig(scale=2, **TINY))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    sampler = PatchSampler(pairs, 2, 16, 8, seed=0)
    for step in range(200):
        lr, hr = sampler.batch(step)
        loss = (m(lr) - hr).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    m.eval()
    gains = []
    with torch.no_grad():
        for p in test:
            model_psnr = sr_metrics(to_uint8(m(to_tensor(p.lr))), p.hr, 2)[0]
            gains.append(model_psnr - sr_metrics(imresize(p.lr, 2), p.hr, 2)[0])
    assert np.mean(gains) > 0.5, gains


def test_patches_are_aligned_and_reproducible():
    pairs = make_pairs(block_images(3, 48, seed=0), 4)
    s = PatchSampler(pairs, 4, 6, 5, seed=7)
    lr, hr = s.batch(3)
    assert lr.shape == (5, 3, 6, 6) and hr.shape == (5, 3, 24, 24)
    lr2, hr2 = s.batch(3)
    assert torch.equal(lr, lr2) and torch.equal(hr, hr2)
    # flips and transposes commute with the symmetric bicubic kernel: LR == imresize(HR patch) in the interior
    for i in range(5):
        h = (hr[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        l = (lr[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.abs(imresize(h, 1 / 4)[2:-2, 2:-2].astype(int) - l[2:-2, 2:-2]).max() <= 1


# ------------------------------------------------------------------ tiling and image modes
def test_tiled_inference_equals_untiled():
    torch.manual_seed(0)
    m = build_model(SRConfig(scale=4, **TINY)).eval()
    lr = torch.rand(1, 3, 37, 29)
    whole = infer.upscale_tensor(m, lr, 4)
    tiled = infer.upscale_tensor(m, lr, 4, tile=12, overlap=10)
    assert tiled.shape == whole.shape == (1, 3, 148, 116)
    assert (tiled - whole).abs().max().item() < 1e-4


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "RGB"])
def test_modes_and_tiny_images(mode):
    torch.manual_seed(0)
    m = build_model(SRConfig(scale=2, **TINY)).eval()
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (5, 7, 3)).astype(np.uint8))
    im = Image.fromarray((rng.integers(0, 65535, (5, 7))).astype(np.uint16)) if mode == "I;16" else base.convert(mode)
    warnings = []
    out = infer.upscale_image(im, m, 2, tile=16, warn=warnings.append)
    assert out.size == (14, 10)
    expect = {"L": "L", "LA": "LA", "RGBA": "RGBA", "P": "RGB", "CMYK": "RGB", "I;16": "L", "RGB": "RGB"}[mode]
    assert out.mode == expect
    assert bool(warnings) == (mode in ("CMYK", "I;16"))
    if mode == "RGBA":  # alpha is upscaled on its own with bicubic
        np.testing.assert_array_equal(np.asarray(out.getchannel("A")), imresize(np.asarray(im.getchannel("A")), 2))
    one = infer.upscale_image(Image.new("RGB", (1, 1), (9, 200, 30)), m, 2)
    assert one.size == (2, 2)


# ------------------------------------------------------------------ 3. model files and resume
def test_train_writes_a_loadable_model_that_round_trips(hr_dir, tmp_path):
    """The model file gives the trained network's outputs. One validation, at the last step, so the model file
    holds the final generator, whose weights the state also holds (torch.save, not the model file)."""
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    res = train(tiny_cfg(hr_dir, tmp_path / "run", eval_every=100), rt, quiet())
    assert Path(res.model_path).exists() and res.best_val_psnr is not None
    model, meta = infer.load_model(res.model_path)
    assert meta["task"] == "superres" and meta["scale"] == 2 and "headline" in meta and meta["config"]["n_blocks"] == 2
    assert infer.check_scale(meta, None) == 2
    with pytest.raises(UsageError, match="trained for x2"):
        infer.check_scale(meta, 4)
    state = torch.load(tmp_path / "run" / "model.state.pt", weights_only=True)
    assert state["step"] == 6 and [h["step"] for h in state["history"]] == [6]
    trained = build_model(SRConfig(scale=2, **TINY))
    trained.load_state_dict(state["model"])
    trained.eval()
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), rtol=0, atol=0)


def test_resume_equals_uninterrupted(hr_dir, tmp_path):
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    full = train(tiny_cfg(hr_dir, tmp_path / "a"), rt, quiet())
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    with pytest.raises(Interrupted):
        train(tiny_cfg(hr_dir, tmp_path / "b"), rt, quiet(), StopAt(3))
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    resumed = train(tiny_cfg(hr_dir, tmp_path / "b", resume=True), rt, quiet())
    a = torch.load(tmp_path / "a" / "model.state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "model.state.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert resumed.steps == full.steps == 6


def test_srgan_names_its_content_loss_fallback(hr_dir, tmp_path, monkeypatch):
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    base = train(tiny_cfg(hr_dir, tmp_path / "g0", steps=2), rt, quiet())
    warnings = []
    rep = quiet()
    rep.warn = warnings.append
    monkeypatch.setattr("dlkit.tasks.superres.losses.local_vgg_weights", lambda path: (None, "no VGG19 weights here"))
    res = train(tiny_cfg(hr_dir, tmp_path / "g1", arch="srgan", init=base.model_path, steps=2, batch_size=2), rt, rep)
    assert any("falls back to pixel L1" in w for w in warnings)
    _, meta = infer.load_model(res.model_path)
    assert meta["arch"] == "srgan" and "fallback" in meta["training"]["loss"]
    state = torch.load(tmp_path / "g1" / "model.state.pt", weights_only=True)
    assert "disc" in state and "opt_d" in state


def test_foreign_truncated_and_pickled_files_are_refused(tmp_path):
    m = build_model(SRConfig(scale=2, **TINY))
    other = tmp_path / "lm.safetensors"
    save_model(other, m.state_dict(), {"task": "lm", "config": {}})
    with pytest.raises(ModelFileError, match="'lm' model"):
        infer.load_model(str(other))
    good = tmp_path / "good.safetensors"
    save_model(good, m.state_dict(), {"task": "superres", "config": {"scale": 2, **TINY}, "scale": 2})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        infer.load_model(str(cut))
    pickled = tmp_path / "pickle.safetensors"
    torch.save(m.state_dict(), pickled)
    with pytest.raises(ModelFileError, match="pickle"):
        infer.load_model(str(pickled))
    wrong = tmp_path / "wrong.safetensors"
    save_model(wrong, m.state_dict(), {"task": "superres", "config": {"scale": 2, "n_blocks": 3}, "scale": 2})
    with pytest.raises(ModelFileError, match="does not match"):
        infer.load_model(str(wrong))


# ------------------------------------------------------------------ 4. CLI
@pytest.fixture(scope="module")
def cli_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("srcli")
    m = build_model(SRConfig(scale=2, **TINY))
    path = tmp / "tiny-x2.safetensors"
    save_model(path, m.state_dict(), {"task": "superres", "arch": "srresnet", "config": {"scale": 2, **TINY},
                                      "scale": 2, "headline": "test"})
    return path


def test_cli_train_end_to_end(invoke, hr_dir, tmp_path):
    r = invoke("superres-train", "--data", hr_dir, "--preset", "tiny", "--scale", "2", "--patch", "12", "--batch-size",
               "2", "--steps", "4", "--eval-every", "2", "--val", hr_dir, "--out", tmp_path / "run", "--json",
               "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and "eval" in kinds and kinds[-1] == "result"
    assert Path(events[-1]["model"]).exists()
    assert events[0]["memory_format"] == "channels-last"  # the CPU default for superres (measured faster)
    # forced contiguous: the same run to float rounding (the format changes the order of sums, not the model)
    r2 = invoke("superres-train", "--data", hr_dir, "--preset", "tiny", "--scale", "2", "--patch", "12",
                "--batch-size", "2", "--steps", "4", "--eval-every", "2", "--val", hr_dir, "--out", tmp_path / "run2",
                "--json", "--device", "cpu", "--memory-format", "contiguous")
    assert r2.exit_code == 0, r2.stderr
    assert json.loads(r2.stdout.splitlines()[0])["memory_format"] == "contiguous"
    a, _ = load_model_file(events[-1]["model"], "superres")
    b, _ = load_model_file(json.loads(r2.stdout.splitlines()[-1])["model"], "superres")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5) for k in a)
    r = invoke("superres-train", "--data", hr_dir, "--scale", "5", "--out", tmp_path / "x")
    assert r.exit_code == 2 and "--scale" in r.stderr and r.stdout == ""


def test_cli_upscale_file_folder_and_bad_inputs(invoke, cli_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(block_images(1, 20)[0][1]).save(src / "a.png")
    Image.new("RGBA", (6, 4), (1, 2, 3, 100)).save(src / "b.png")
    r = invoke("superres", src / "a.png", "-o", tmp_path / "a_x2.png", "-m", cli_model, "--tile", "8")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "a_x2.png")
    assert Image.open(tmp_path / "a_x2.png").size == (40, 40)
    # output == input is refused without --overwrite
    r = invoke("superres", src / "a.png", "-o", src / "a.png", "-m", cli_model)
    assert r.exit_code == 1 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    # a scale the model was not trained for
    r = invoke("superres", src / "a.png", "-o", tmp_path / "z.png", "-m", cli_model, "--scale", "4")
    assert r.exit_code == 2 and "trained for x2" in r.stderr
    # a folder with bad files: the good ones are written, exit 1 at the end
    (src / "text.png").write_text("not an image")
    (src / "empty.jpg").write_bytes(b"")
    (src / "cut.png").write_bytes((src / "a.png").read_bytes()[:60])
    r = invoke("superres", src, "-o", tmp_path / "out", "-m", cli_model, "--json")
    assert r.exit_code == 1
    records = [json.loads(line) for line in r.stdout.splitlines()]
    written = [w for w in records if "output" in w]
    assert sorted(Path(w["output"]).name for w in written) == ["a.png", "b.png"]
    errors = [e for e in records if e.get("event") == "error"]
    assert sorted(Path(e["path"]).name for e in errors) == ["cut.png", "empty.jpg", "text.png"]
    assert "3 of 5 images failed" in r.stderr
    assert Image.open(tmp_path / "out" / "b.png").mode == "RGBA"
    for name in ("text.png", "empty.jpg", "cut.png"):
        assert name in r.stderr
    assert "Traceback" not in r.stderr
    # a single bad file: its own one-line error
    r = invoke("superres", src / "empty.jpg", "-o", tmp_path / "e.png", "-m", cli_model)
    assert r.exit_code == 1 and "empty" in r.stderr
    # a model of another task, a missing model
    other = tmp_path / "lm.safetensors"
    save_model(other, {"w": torch.zeros(1)}, {"task": "lm", "config": {}})
    r = invoke("superres", src / "a.png", "-o", tmp_path / "l.png", "-m", other)
    assert r.exit_code == 1 and "'lm' model" in r.stderr and "Traceback" not in r.stderr
    r = invoke("superres", src / "a.png", "-o", tmp_path / "l.png", "-m", "no-such-model")
    assert r.exit_code == 1 and "no-such-model" in r.stderr


def test_cli_eval_table_json_and_compare(invoke, cli_model, tmp_path):
    hr = tmp_path / "set"
    hr.mkdir()
    for name, img in block_images(2, 30, seed=5):
        Image.fromarray(img).save(hr / name)
    r = invoke("superres", "--eval", hr, "-m", cli_model, "-m", "bicubic")
    assert r.exit_code == 0, r.stderr
    assert "bicubic" in r.stdout and "tiny-x2" in r.stdout and "PSNR" in r.stdout
    r = invoke("superres", "--eval", hr, "-m", cli_model, "--json")
    out = json.loads(r.stdout)
    assert out["scale"] == 2 and set(out["results"]) == {"bicubic", "tiny-x2"}
    assert out["results"]["bicubic"]["psnr"] > 10
    r = invoke("superres", "--hr", hr / "blocks0.png", "--compare", tmp_path / "panel.png", "-m", cli_model, "--json")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert Path(res["panel"]).exists() and set(res["metrics"]) == {"bicubic", "tiny-x2"}
    # the lecture's slide: several models side by side; two files with one name are told apart by path
    other = tmp_path / "other" / Path(cli_model).name
    other.parent.mkdir()
    shutil.copy(cli_model, other)
    r = invoke("superres", "--hr", hr / "blocks0.png", "--compare", tmp_path / "p2.png", "-m", cli_model, "-m", other,
               "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)["metrics"]
    assert set(m) == {"bicubic", "tiny-x2", str(other)} and m["tiny-x2"] == m[str(other)]
    assert Image.open(tmp_path / "p2.png").size[0] > Image.open(tmp_path / "panel.png").size[0]
    r = invoke("superres", "-m", cli_model)
    assert r.exit_code == 2


def test_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from dlkit.cli import app; "
            "r = CliRunner().invoke(app, ['superres', '--help']); assert r.exit_code == 0, r.output; "
            "r = CliRunner().invoke(app, ['superres-train', '--help']); assert r.exit_code == 0; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(hr_dir, tmp_path):
    """torchrun with 2 gloo processes: rank-0 logging and saving, each rank its own patches."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit",
           "superres-train", "--data", str(hr_dir), "--preset", "tiny", "--scale", "2", "--patch", "12",
           "--batch-size", "2", "--steps", "4", "--eval-every", "2", "--val-split", "1", "--out", str(tmp_path / "ddp"),
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == str(tmp_path / "ddp" / "model.safetensors")
    assert r.stderr.count("2 processes") == 1  # only rank 0 talks
    assert (tmp_path / "ddp" / "model.safetensors").exists()


# ------------------------------------------------------------------ the three modes: jobs that validate themselves
@pytest.mark.parametrize("kw,needle", [
    (dict(inputs=["a.png"], eval_dir="set5"), "--eval benchmarks a folder"),
    (dict(eval_dir="set5", compare="p.png"), "--eval benchmarks a folder"),
    (dict(inputs=["a.png", "b.png"], compare="p.png"), "--compare draws one image"),
    (dict(compare="p.png"), "--compare needs an input image or --hr"),
    (dict(inputs=["a.png"], hr="hr.png"), "--hr is used with --compare"),
    (dict(inputs=["a.png"], models=["x", "y"]), "give one --model"),
    (dict(), "give images to upscale"),
    (dict(inputs=["a.png", "b.png"], out="two.png"), "looks like a file"),
])
def test_superres_job_refuses_combinations_that_mean_nothing(kw, needle):
    from dlkit.tasks.superres.jobs import Tiling, make_job

    args = dict(inputs=[], out=None, models=None, eval_dir=None, compare=None, hr=None, scale=None, tiling=Tiling(),
                max_pixels=1000)
    with pytest.raises(UsageError, match=needle):
        make_job(**{**args, **kw})


def test_superres_jobs_pick_the_mode_and_defaults(tmp_path, monkeypatch):
    from dlkit.tasks.superres.jobs import CompareJob, EvalJob, Tiling, UpscaleJob, make_job

    args = dict(inputs=[], out=None, models=None, eval_dir=None, compare=None, hr=None, scale=2, tiling=Tiling(0),
                max_pixels=1000)
    up = make_job(**{**args, "inputs": ["a.png"]})
    assert isinstance(up, UpscaleJob) and up.model == "srresnet-x4" and up.tiling.describe() == "whole images"
    cmp = make_job(**{**args, "compare": "p.png", "hr": "hr.png", "models": ["m1", "m2"]})
    assert isinstance(cmp, CompareJob) and cmp.lr is None and cmp.models == ["m1", "m2"]
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))  # the bundled model is found in the zoo
    ev = make_job(**{**args, "eval_dir": "set5"})
    assert isinstance(ev, EvalJob) and ev.models == ["srresnet-x4"]
    with pytest.raises(UsageError, match="--tile 4 is too small"):
        Tiling(4)


@pytest.mark.parametrize("args,needle", [
    (["--eval", "set5", "a.png"], "--eval benchmarks a folder"),
    (["a.png", "--hr", "b.png"], "--hr is used with --compare"),
    (["a.png", "-m", "x", "-m", "y"], "give one --model"),
    (["a.png", "--tile", "3"], "--tile 3 is too small"),
])
def test_cli_bad_mode_combinations_are_one_line_exit_2(invoke, args, needle):
    r = invoke("superres", *args)
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
