"""Frame prediction: the Moving MNIST generator, model contract, learning, checkpoints, metrics, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import StopAt
from dlkit.core.errors import DataError, Interrupted, ModelFileError
from dlkit.core.modelfile import save_model
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime
from dlkit.core.state import load_state
from dlkit.tasks.frames import clips, metrics
from dlkit.tasks.frames.data import (compose, fixed_sequences, moving_mnist, open_sequences, read_digits, train_batch,
                                     trajectories)
from dlkit.tasks.frames.infer import load_model
from dlkit.tasks.frames.losses import gradient_difference
from dlkit.tasks.frames.model import PRESETS, ClipDiscriminator, FramesConfig, build_model
from dlkit.tasks.frames.train import TrainConfig, _Run, train

TINY = dict(width=8, depth=1, kernel=3, t_width=16)


def cpu_rt(seed: int = 0) -> Runtime:
    torch.manual_seed(seed)
    return Runtime(torch.device("cpu"), "fp32", seed, scaler=torch.amp.GradScaler("cpu", enabled=False))


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    """A tiny mnist.npz: 40 train / 20 test 'digits' (bright blocks with texture) in MNIST's layout."""
    g = np.random.default_rng(0)
    x = np.zeros((60, 28, 28), np.uint8)
    for i in range(60):
        r, c = g.integers(2, 12, 2)
        x[i, r:r + 14, c:c + 10] = g.integers(120, 256, (14, 10))
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    np.savez(path, x_train=x[:40], y_train=np.arange(40) % 10, x_test=x[40:], y_test=np.arange(20) % 10)
    return path


def tiny_cfg(mnist: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(mnist), out=str(out), width=8, depth=1, kernel=3, batch_size=4, steps=6, warmup=2,
                val_size=8, eval_every=100, log_every=2, lr=3e-3)
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------ 1. the generator
def test_trajectories_stay_in_canvas_and_bounce_off_the_walls():
    pos = trajectories(np.random.default_rng(1), 300, frames=120)  # (300, 120, 2)
    assert pos.min() == 0 and pos.max() == 36  # the walls are reached ...
    d = np.diff(pos, axis=1)  # (300, 119, 2)
    for s in range(300):
        for k in range(2):
            moves = [(t, v) for t, v in enumerate(d[s, :, k]) if v != 0]
            for (t0, v0), (t1, v1) in zip(moves, moves[1:]):
                if np.sign(v0) != np.sign(v1):  # ... and direction changes only there
                    assert set(pos[s, t0 + 1:t1 + 1, k].tolist()) & {0, 36}
    speed = np.abs(d[pos[:, 1:, :].clip(1, 35) == pos[:, 1:, :]])
    assert speed.max() <= 4  # 3.6 px per frame, truncated to whole pixels


def test_digits_stay_whole_in_the_canvas_and_combine_by_max():
    digits = np.full((5, 28, 28), 7, np.uint8)
    digits[:, 3:25, 4:20] = np.arange(1, 23 * 1)[:, None].astype(np.uint8) * 10  # some texture
    one = moving_mnist(digits, 5, np.random.default_rng(2), frames=30, num_digits=1)
    assert one.shape == (5, 30, 64, 64)
    assert (one.reshape(5, 30, -1).sum(-1) == int(digits[0].astype(np.int64).sum())).all()  # nothing cut off
    a, b = np.full((1, 28, 28), 100, np.uint8), np.full((1, 28, 28), 200, np.uint8)
    corners = np.array([[[[0, 0]], [[10, 10]]]])  # (n=1, D=2, T=1, 2): overlapping by 18x18
    video = compose(np.stack([a[0], b[0]])[None], corners)
    assert video[0, 0, 5, 5] == 100 and video[0, 0, 15, 15] == 200 and video[0, 0, 30, 30] == 200
    assert video[0, 0, 50, 50] == 0 and video[0, 0, 5, 30] == 0


def test_batches_depend_only_on_seed_step_and_rank(mnist):
    digits = read_digits(mnist, "train")
    later = train_batch(digits, 4, 3, 9)  # drawn first: no hidden state carries over between steps
    first = [train_batch(digits, 4, 3, s) for s in range(10)]
    assert np.array_equal(first[9], later)  # what a resumed run at step 9 draws
    assert not np.array_equal(first[8], first[9])
    assert not np.array_equal(train_batch(digits, 4, 3, 9, rank=1), later)
    assert not np.array_equal(train_batch(digits, 4, 4, 9), later)
    test = read_digits(mnist, "test")
    whole = fixed_sequences(test, 0, 250)
    assert np.array_equal(fixed_sequences(test, 180, 40), whole[180:220])  # chunked: any window, same sequences


def test_standard_npy_file_is_read_as_sequences(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (20, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", arr)
    seqs = open_sequences(tmp_path / "mnist_test_seq.npy")
    assert seqs.size == 3 and np.array_equal(seqs.get(1, 2), arr[:, 1:3].transpose(1, 0, 2, 3))
    raw = (tmp_path / "mnist_test_seq.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(DataError, match="truncated"):
        open_sequences(tmp_path / "cut.npy")
    np.save(tmp_path / "f.npy", arr.astype(np.float32))
    with pytest.raises(DataError, match="not in the Moving MNIST format"):
        open_sequences(tmp_path / "f.npy")


# ------------------------------------------------------------------ 2. model contract
@pytest.mark.parametrize("arch", ["simvp", "convlstm"])
def test_model_shapes_gradients_and_determinism(arch):
    cfg = FramesConfig(arch, size=16, t_in=4, t_out=3, patch=2 if arch == "simvp" else 4, **TINY)
    torch.manual_seed(0)
    m = build_model(cfg)
    x = torch.rand(2, 4, 1, 16, 16)
    y = m(x)
    assert y.shape == (2, 3, 1, 16, 16) and 0 <= y.min() and y.max() <= 1
    y.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(build_model(cfg).eval()(x))
    assert torch.equal(outs[0], outs[1])
    d = ClipDiscriminator(7, 1, 8)
    assert d(torch.cat([x, y.detach()], 1)).shape == (2,)


def test_presets_build_and_bad_configs_are_refused():
    from dlkit.tasks.frames.cli import PRESETS as CLI_PRESETS

    assert tuple(PRESETS) == CLI_PRESETS
    for name in ("simvp-cpu", "convlstm-cpu"):
        assert build_model(PRESETS[name])(torch.rand(1, 10, 1, 64, 64)).shape == (1, 10, 1, 64, 64)
    with pytest.raises(ValueError, match="multiple of"):
        build_model(FramesConfig("simvp", size=30, patch=1))
    with pytest.raises(ValueError, match="arch"):
        build_model(FramesConfig("transformer"))


# ------------------------------------------------------------------ 3. learning
@pytest.mark.parametrize("arch", ["simvp", "convlstm"])
def test_models_fit_a_few_moving_sequences(arch, one_thread):
    """Overfitting 4 fixed sequences of a moving square: the loss must fall far below its start."""
    video = torch.zeros(4, 8, 1, 16, 16)
    for b in range(4):
        for t in range(8):
            r = (b * 3 + t) % 12
            video[b, t, 0, r:r + 4, 4 * b:4 * b + 4] = 1.0
    cfg = FramesConfig(arch, size=16, t_in=4, t_out=4, patch=1 if arch == "simvp" else 2, width=16, depth=2, kernel=3,
                       t_width=32)
    torch.manual_seed(0)
    m = build_model(cfg)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):
        loss = torch.nn.functional.mse_loss(m(video[:, :4]), video[:, 4:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.25 * losses[0]


def test_training_beats_copy_last_frame(mnist, tmp_path, one_thread):
    cfg = tiny_cfg(mnist, tmp_path / "r", steps=40, log_every=5, val_size=16, lr=1e-2)
    history = []
    report = Reporter(quiet=True)
    report.event = lambda kind, **f: history.append(f["loss"]) if kind == "step" else None
    res = train(cfg, cpu_rt(), report)
    assert len(history) == 8 and np.mean(history[-2:]) < np.mean(history[:2])
    assert res.metrics["val_mse"] < 0.75 * res.baseline["val_mse"]  # the same validation sequences


# ------------------------------------------------------------------ 4. checkpoints
def test_saved_model_predicts_like_the_model_in_memory(mnist, tmp_path):
    cfg = tiny_cfg(mnist, tmp_path / "r")
    run = _Run(cfg, cpu_rt(), Reporter(quiet=True), read_digits(mnist, "train"), None)
    for s in range(3):
        run.train_step(s)
    run.save(3, write_model=True)
    loaded, meta = load_model(str(run.model_path))
    x = torch.rand(2, 10, 1, 64, 64)
    run.gen.eval()
    assert meta["task"] == "frames" and torch.equal(loaded(x), run.gen(x))


def test_init_starts_from_the_model_and_the_recipe_says_so(mnist, tmp_path):
    first = train(tiny_cfg(mnist, tmp_path / "a", steps=2), cpu_rt(), Reporter(quiet=True))
    cfg = tiny_cfg(mnist, tmp_path / "b", steps=2, loss="adversarial", init=str(first.model_path), preset="simvp")
    run = _Run(cfg, cpu_rt(), Reporter(quiet=True), read_digits(mnist, "train"), None)
    start, _ = load_model(str(first.model_path))
    assert run.mcfg == start.cfg  # the init model's shape, not the preset's
    assert all(torch.equal(a, b) for a, b in zip(run.gen.state_dict().values(), start.state_dict().values()))
    recipe = run.meta(0)["training"]["recipe"]
    assert recipe["init"] == "model.safetensors" and recipe["preset"] is None and recipe["width"] is None


@pytest.mark.parametrize("loss", ["mse", "adversarial"])
def test_interrupted_and_resumed_training_equals_uninterrupted(mnist, tmp_path, loss, one_thread):
    kw = dict(loss=loss, d_steps=2, eval_every=3)
    train(tiny_cfg(mnist, tmp_path / "a", **kw), cpu_rt(), Reporter(quiet=True))
    with pytest.raises(Interrupted):
        train(tiny_cfg(mnist, tmp_path / "b", **kw), cpu_rt(), Reporter(quiet=True), StopAt(4))
    assert load_state(tmp_path / "b" / "model.state.pt")["step"] == 4
    train(tiny_cfg(mnist, tmp_path / "b", resume=True, **kw), cpu_rt(1), Reporter(quiet=True))
    a, b = (load_state(tmp_path / r / "model.state.pt") for r in "ab")
    assert a["step"] == b["step"] == 6
    for key in ["model"] + (["disc"] if loss == "adversarial" else []):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)


def test_snapshots_are_model_files_that_average_and_belong_to_one_run(mnist, tmp_path, invoke, one_thread):
    out = tmp_path / "r"
    events = []
    report = Reporter(quiet=True)
    report.event = lambda kind, **f: events.append(f) if kind == "snapshot" else None
    train(tiny_cfg(mnist, out, steps=6, eval_every=3, snapshot_every=2), cpu_rt(), report)
    snaps = sorted((out / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == [f"step-000000{k}.safetensors" for k in (2, 4, 6)]
    assert [e["step"] for e in events] == [2, 4, 6]
    from dlkit.core.modelfile import load_model_file

    files = [load_model_file(p, "frames") for p in snaps]
    assert [m["training"]["steps"] for _, m in files] == [2, 4, 6]
    assert files[0][1]["metrics"] == {} and files[2][1]["metrics"]["val_mse"] > 0  # step 6 was validated, 2 was not
    final, _ = load_model_file(out / "model.safetensors", "frames")
    key = next(k for k in final if k.endswith("weight"))
    assert torch.equal(files[2][0][key], final[key]) and not torch.equal(files[0][0][key], final[key])
    r = invoke("models", "average", *snaps[1:], "-o", tmp_path / "avg.safetensors")
    assert r.exit_code == 0, r.stderr
    avg, _ = load_model(str(tmp_path / "avg.safetensors"))
    torch.testing.assert_close(avg.state_dict()[key], (files[1][0][key] + files[2][0][key]) / 2)
    # a resumed run keeps the snapshots; a new run in the folder starts without the old ones
    train(tiny_cfg(mnist, out, steps=8, eval_every=3, snapshot_every=2, resume=True), cpu_rt(), Reporter(quiet=True))
    assert len(list((out / "snapshots").iterdir())) == 4
    train(tiny_cfg(mnist, out, steps=2, snapshot_every=2), cpu_rt(), Reporter(quiet=True))
    assert [p.name for p in (out / "snapshots").iterdir()] == ["step-0000002.safetensors"]


def test_foreign_models_and_states_are_refused(mnist, tmp_path):
    save_model(tmp_path / "gan.safetensors", {"w": torch.zeros(2)}, {"task": "gan", "config": {}})
    with pytest.raises(ModelFileError, match="'gan' model"):
        load_model(str(tmp_path / "gan.safetensors"))
    (tmp_path / "pickle.safetensors").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(str(tmp_path / "pickle.safetensors"))
    from dlkit.core.state import save_state

    (tmp_path / "r").mkdir()
    save_state(tmp_path / "r" / "model.state.pt", {"model": {}, "step": 1}, task="gan")
    with pytest.raises(ModelFileError, match="'gan' run"):
        train(tiny_cfg(mnist, tmp_path / "r", resume=True), cpu_rt(), Reporter(quiet=True))


# ------------------------------------------------------------------ metrics and losses
def test_metrics_match_scikit_image_and_their_definitions():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    g = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 3, 1, 32, 32, generator=g)
    pred = (truth + 0.1 * torch.randn(2, 3, 1, 32, 32, generator=g)).clamp(0, 1)
    m = metrics.measure(pred, truth)
    for i in range(2):
        for t in range(3):
            p, y = pred[i, t, 0].numpy().astype(np.float64), truth[i, t, 0].numpy().astype(np.float64)
            assert m["ssim"][i, t] == pytest.approx(structural_similarity(p, y, data_range=1.0), abs=1e-5)
            assert m["psnr"][i, t] == pytest.approx(peak_signal_noise_ratio(y, p, data_range=1.0), abs=1e-3)
            assert m["mse"][i, t] == pytest.approx(((p - y) ** 2).sum(), rel=1e-5)  # summed over the frame
            assert m["mae"][i, t] == pytest.approx(np.abs(p - y).sum(), rel=1e-5)
    rgb = torch.rand(1, 1, 3, 24, 24, generator=g), torch.rand(1, 1, 3, 24, 24, generator=g)
    ref = structural_similarity(rgb[0][0, 0].numpy(), rgb[1][0, 0].numpy(), data_range=1.0, channel_axis=0)
    assert metrics.ssim(*rgb)[0, 0] == pytest.approx(ref, abs=1e-5)


def test_blur_is_less_sharp_and_baselines_are_what_they_say():
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1)
    truth = (torch.rand(1, 2, 1, 32, 32, generator=g) > 0.8).float()
    blur = F.avg_pool2d(truth.flatten(0, 1), 5, 1, 2).reshape(truth.shape)
    assert metrics.grad(blur).mean() < 0.5 * metrics.grad(truth).mean()
    assert metrics.sharp_diff(blur, truth).mean() < metrics.sharp_diff(truth * 0.95, truth).mean()
    assert gradient_difference(truth, truth) == 0 and gradient_difference(blur, truth) > 0.1
    ctx = torch.rand(3, 4, 1, 8, 8, generator=g)
    assert torch.equal(metrics.copy_last(ctx, 2)[:, 1], ctx[:, -1])
    assert torch.allclose(metrics.mean_frame(ctx, 2)[:, 0], ctx.mean(1))
    s = metrics.Scores()
    s.add(ctx[:, :2], ctx[:, 2:])
    s.add(ctx[:1, :2], ctx[:1, 2:])
    per = metrics.mse(ctx[:, :2], ctx[:, 2:])
    expect = torch.cat([per, per[:1]]).mean(0)
    assert s.per_frame()["mse"] == pytest.approx(expect.tolist(), rel=1e-6) and s.count == 4


# ------------------------------------------------------------------ 5. CLI
@pytest.fixture(scope="module")
def trained(mnist, tmp_path_factory) -> Path:
    """A tiny simvp model trained through the CLI (shared by the CLI tests)."""
    from typer.testing import CliRunner

    from dlkit.cli import app

    out = tmp_path_factory.mktemp("runs") / "mm"
    r = CliRunner().invoke(app, ["frame-predict-train", "--data", str(mnist), "--out", str(out), "--width", "8",
                                 "--depth", "1", "--steps", "4", "--batch-size", "2", "--val-size", "4",
                                 "--log-every", "2", "--threads", "1"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out / "model.safetensors")  # stdout: the result only
    assert "frame-predict-train" in r.stderr and "val MSE" in r.stderr
    return out / "model.safetensors"


def _gif(path: Path, frames: int = 14, size: int = 48) -> Path:
    from PIL import Image

    ims = [Image.fromarray(np.full((size, size, 3), (i * 17) % 256, np.uint8)) for i in range(frames)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=100)
    return path


def test_cli_predicts_a_gif_and_writes_the_strip(trained, tmp_path, invoke):
    r = invoke("frame-predict", _gif(tmp_path / "in.gif"), "-m", trained, "-o", tmp_path / "next.gif", "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "next.gif"), str(tmp_path / "next.png")]
    from PIL import Image

    with Image.open(tmp_path / "next.gif") as im:
        assert im.n_frames == 20 and im.size == (64, 64)  # context + prediction at the model's size
    with Image.open(tmp_path / "next.png") as im:
        assert im.size == (10 * 66 - 2, 3 * 66 - 2)  # rows context | prediction | truth (4 true frames)
    assert "resized" in r.stderr and "4 true frames" in r.stderr
    again = invoke("frame-predict", tmp_path / "in.gif", "-m", trained, "-o", tmp_path / "next.gif")
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_cli_eval_and_compare(trained, mnist, tmp_path, invoke):
    r = invoke("frame-predict", "--eval", "--data", mnist, "-n", "12", "--batch-size", "5", "-m", trained, "--json")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["sequences"] == 12 and set(res["rows"]) == {"model", "copy-last", "mean-frame"}
    assert len(res["per_frame"]["copy-last"]["mse"]) == 10
    table = invoke("frame-predict", "--eval", "--data", mnist, "-n", "3", "-m", trained)
    assert table.exit_code == 0 and "copy-last" in table.stdout and "SSIM" in table.stdout
    np.save(tmp_path / "seq.npy", np.random.default_rng(0).integers(0, 256, (20, 5, 64, 64), dtype=np.uint8))
    r = invoke("frame-predict", "--eval", "--data", tmp_path / "seq.npy", "-m", trained, "--json")  # the standard file
    assert r.exit_code == 0 and json.loads(r.stdout)["sequences"] == 5
    r = invoke("frame-predict", "--compare", trained, trained, "--data", mnist, "--index", "2", "-o", tmp_path / "s.png")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "s.png") and (tmp_path / "s.png").stat().st_size > 1000
    assert "truth: sharpness" in r.stderr


def _one_line_error(r) -> str:
    assert r.exit_code != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def test_bad_clips_are_one_line_errors(trained, tmp_path, invoke):
    def run(clip):
        return invoke("frame-predict", clip, "-m", trained, "-o", tmp_path / "o.gif", "--overwrite")

    (tmp_path / "text.gif").write_text("not a gif")
    assert "text.gif" in _one_line_error(run(tmp_path / "text.gif"))
    raw = _gif(tmp_path / "ok.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(raw[:len(raw) // 3])
    assert "cut.gif" in _one_line_error(run(tmp_path / "cut.gif"))
    assert "at least 10 frames" in _one_line_error(run(_gif(tmp_path / "short.gif", frames=4)))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 3, dtype=object))
    assert "Python objects" in _one_line_error(run(tmp_path / "obj.npy"))
    np.save(tmp_path / "vec.npy", np.zeros(12, np.uint8))
    assert "(T, H, W)" in _one_line_error(run(tmp_path / "vec.npy"))
    np.save(tmp_path / "big.npy", np.full((12, 8, 8), 3.0, np.float32))
    assert "[0, 1]" in _one_line_error(run(tmp_path / "big.npy"))
    (tmp_path / "empty").mkdir()
    assert "no frames" in _one_line_error(run(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    from PIL import Image

    for i in range(11):
        Image.fromarray(np.zeros((32 if i < 5 else 40, 32), np.uint8)).save(mixed / f"{i:03d}.png")
    assert "one size" in _one_line_error(run(mixed))
    (mixed / "005.png").write_bytes(b"\x89PNG broken")
    assert "005.png" in _one_line_error(run(mixed))


def test_frame_folder_and_npy_colour_clips_are_read(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), (10 * i, 0, 0), np.uint8)).save(folder / f"f{i}.png")
    clip = clips.read_clip(folder)
    assert clip.shape == (3, 8, 8, 3) and clip[2, 0, 0, 0] == pytest.approx(20 / 255)
    np.save(tmp_path / "g.npy", np.zeros((5, 8, 8), np.uint8))
    assert clips.read_clip(tmp_path / "g.npy").shape == (5, 8, 8, 1)
    assert clips.fit_clip(clip, 1, 16).shape == (3, 16, 16, 1)


def test_usage_errors_name_the_missing_piece(invoke, tmp_path):
    assert "--out" in _one_line_error(invoke("frame-predict", tmp_path / "x.gif"))
    assert "--data" in _one_line_error(invoke("frame-predict", "--eval"))
    assert "not both" in _one_line_error(invoke("frame-predict", "--eval", "--compare", "a", "b"))
    r = invoke("frame-predict-train", "--data", tmp_path / "none.npz", "--loss", "gan", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "gan" in _one_line_error(r)


@pytest.mark.slow
def test_torchrun_two_ranks_stop_on_max_time_and_resume(mnist, tmp_path):
    """2 gloo processes: both stop after the same step on --max-time, rank 0 saves, --resume finishes the run."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit",
            "frame-predict-train", "--data", str(mnist), "--width", "8", "--depth", "1", "--batch-size", "2",
            "--steps", "6", "--val-size", "4", "--log-every", "1", "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    r = subprocess.run(base + ["--max-time", "0.00001"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("--max-time reached") == 1 and r.stderr.count("2 processes") == 1  # rank 0 talks
    first = load_state(tmp_path / "ddp" / "model.state.pt")["step"]
    assert 1 <= first < 6
    r = subprocess.run(base + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming at step {first}" in r.stderr and load_state(tmp_path / "ddp" / "model.state.pt")["step"] == 6
