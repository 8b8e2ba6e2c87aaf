"""adv-attack: eps parsing, attack contracts (budget, [0, 1], eval mode), learning-free "does it fool" checks on
a tiny trained classifier, agreement with torchattacks, victims, CLI end to end and bad inputs (CPU, tiny data)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlkit.core.errors import ModelFileError, UsageError
from dlkit.vision import attacks as A
from dlkit.tasks.adversarial.data import apply_transforms, resolve_target
from dlkit.tasks.adversarial.infer import attack_image, robustness
from dlkit.tasks.adversarial.spec import METHODS, TARGETED, parse_eps, parse_eps_list, \
    parse_methods, parse_transforms
from dlkit.vision.classifier import Classifier, save_classifier

SIDE, K, USED = 12, 10, 4  # 12x12 grey images, 10 output classes ("0".."9", MNIST-style), 4 of them used


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (n, 1, 12, 12): a bright 4x4 blob in quadrant y (jittered) on noise; y in 0..3."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, USED, (n,), generator=g)
    x = torch.rand(n, 1, SIDE, SIDE, generator=g) * 0.3
    for i in range(n):
        top = (int(y[i]) // 2) * 6 + int(torch.randint(0, 3, (1,), generator=g))
        left = (int(y[i]) % 2) * 6 + int(torch.randint(0, 3, (1,), generator=g))
        x[i, 0, top:top + 4, left:left + 4] = 0.7 + 0.3 * torch.rand(4, 4, generator=g)
    return (x * 255).round().to(torch.uint8), y


def build_toy() -> Classifier:
    """The small MNIST CNN (BatchNorm inside) behind the classifier wrapper that owns the normalisation."""
    from dlkit.nets.classifiers import build_classifier

    net = build_classifier("mnist-cnn", 1, K, SIDE, width=4)
    return Classifier(net, arch="mnist-cnn", arch_kwargs={"width": 4}, classes=[str(i) for i in range(K)],
                      input_size=(1, SIDE, SIDE), mean=(0.2,), std=(0.3,))


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier trained for a few seconds: >= 95% on held-out toy data."""
    torch.manual_seed(0)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    model = build_toy()
    x, y = toy_data(512, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(150):
        idx = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(model(x[idx].float() / 255), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    torch.set_num_threads(old)
    return model


@pytest.fixture(scope="module")
def test_set():
    x, y = toy_data(200, seed=2)
    return x, y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ------------------------------------------------------------------ parsing
@pytest.mark.parametrize("text,value", [("8", 8 / 255), ("8/255", 8 / 255), ("0.007", 0.007), ("1", 1 / 255),
                                        ("1.0", 1.0), ("0", 0.0), ("2.5", 2.5 / 255), ("255", 1.0), ("0.5/255", 0.5 / 255)])
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text,words", [("-1", "negative"), ("-0.1", "negative"), ("256", "above 255"),
                                        ("300/255", "above 255"), ("8/0", "division by zero"), ("abc", "not a number"),
                                        ("nan", "finite"), ("", "empty")])
def test_parse_eps_refuses(text, words):
    with pytest.raises(UsageError, match=words):
        parse_eps(text)


def test_parse_lists_methods_transforms():
    assert parse_eps_list("0,2,4,8,16") == pytest.approx([0, 2 / 255, 4 / 255, 8 / 255, 16 / 255])
    assert parse_methods("fgsm, PGD,pgd-linf,pgdl2") == ["fgsm", "pgd", "pgd-l2"]
    with pytest.raises(UsageError, match="unknown attack"):
        parse_methods("fgsm,foo")
    ts = parse_transforms("jpeg:75,resize:0.5,blur:1")
    assert [str(t) for t in ts] == ["jpeg:75", "resize:0.5", "blur:1"]
    for bad in ("jpeg:0", "resize:2", "warp:1", "blur:x"):
        with pytest.raises(UsageError):
            parse_transforms(bad)


def test_kurakin_steps():
    # Kurakin et al. 2016: min(eps + 4, 1.25 eps) in 0-255 units (8/255 * 255 is 7.9999..., still 10 steps)
    assert [A.kurakin_steps(e / 255) for e in (1, 2, 4, 8, 16)] == [1, 2, 5, 10, 20]


# ------------------------------------------------------------------ attack contracts
def _cfg(method, eps, **kw):
    kw.setdefault("steps", {"deepfool": 20, "cw": 30}.get(method))
    if method == "cw":
        kw.setdefault("cw_c", 10.0)
        kw.setdefault("cw_lr", 0.05)
    return A.AttackConfig(method=method, eps=eps, **kw)


@pytest.mark.parametrize("method", METHODS)
def test_budget_range_and_model_state(method, trained, test_set):
    """Every method: perturbation within eps (L2 radius for pgd-l2), images in [0, 1], the model's mode and
    requires_grad flags restored, and the attack computed in eval mode even when the model was training."""
    x = test_set[0][:32].float() / 255
    y = test_set[1][:32]
    eps = 1.0 if method == "pgd-l2" else 0.1
    trained.train()
    torch.manual_seed(0)
    adv = A.run_attack(trained, x, y, _cfg(method, eps))
    assert trained.training and all(p.requires_grad for p in trained.parameters())
    trained.eval()
    torch.manual_seed(0)
    again = A.run_attack(trained, x, y, _cfg(method, eps))
    assert torch.allclose(adv, again, atol=1e-6), "the attack must not depend on the model's train/eval mode"
    assert adv.min() >= 0 and adv.max() <= 1
    d = (adv - x).flatten(1)
    if method == "pgd-l2":
        assert float(d.norm(dim=1).max()) <= eps + 1e-5
    else:
        assert float(d.abs().max()) <= eps + 1e-6
    assert float(d.abs().max()) > 0


def test_fgsm_lowers_accuracy(trained, test_set):
    x, y = test_set[0].float() / 255, test_set[1]
    clean = accuracy(trained, x, y)
    assert clean >= 0.95
    small = accuracy(trained, A.fgsm(trained, x, y, 0.1), y)
    large = accuracy(trained, A.fgsm(trained, x, y, 0.3), y)
    assert large <= clean - 0.2 and large <= small
    pgd = accuracy(trained, A.pgd(trained, x, y, 0.3, steps=10), y)
    assert pgd <= 0.05  # iterating is much stronger than one step


@pytest.fixture(scope="module")
def linear():
    """A linear softmax classifier on the toy data: there one FGSM step is exact (Goodfellow et al.'s argument)."""
    torch.manual_seed(0)
    lin = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIDE * SIDE, K)), arch="linear",
                     classes=[str(i) for i in range(K)], input_size=(1, SIDE, SIDE), mean=(0.2,), std=(0.3,))
    x, y = toy_data(512, seed=1)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-2)
    for _ in range(200):
        idx = torch.randint(0, len(y), (64,))
        loss = F.cross_entropy(lin(x[idx].float() / 255), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lin.eval()


@pytest.mark.parametrize("method", TARGETED)
def test_targeted_attacks_reach_the_target(method, trained, linear, test_set):
    x, y = test_set[0][:40].float() / 255, test_set[1][:40]
    target = (y + 1) % USED
    eps = 3.0 if method == "pgd-l2" else 0.35
    model = linear if method == "fgsm" else trained
    kw = {"steps": 40, "step_size": 0.02} if method in ("bim", "pgd", "mifgsm") else {}
    if method == "pgd-l2":
        kw = {"steps": 40}
    if method == "cw":  # unbounded (eps 0): C&W's L2 solution is not clipped into an L-inf box here
        kw, eps = {"steps": 100, "cw_c": 10.0, "cw_lr": 0.05}, 0.0
    adv = A.run_attack(model, x, y, _cfg(method, eps, **kw), target)
    with torch.no_grad():
        hit = float((model(adv).argmax(1) == target).float().mean())
    assert hit >= 0.85, f"{method}: {hit:.2f} reached the target"


def test_ill_deepfool_cw_fool_the_model(trained, linear, test_set):
    x, y = test_set[0][:40].float() / 255, test_set[1][:40]
    with torch.no_grad():
        least = linear(x).argmin(1)
    adv = A.ill(linear, x, y, 0.35, steps=40, step_size=0.02)
    with torch.no_grad():
        assert float((linear(adv).argmax(1) == least).float().mean()) >= 0.8
    assert accuracy(trained, A.ill(trained, x, y, 0.35, steps=40, step_size=0.02), y) <= 0.5
    df = A.deepfool(trained, x, steps=50)
    cw = A.cw(trained, x, y, steps=100, c=5.0, lr=0.05)
    with torch.no_grad():
        assert float((trained(df).argmax(1) != y).float().mean()) >= 0.9
        fooled = trained(cw).argmax(1) != y
    assert float(fooled.float().mean()) >= 0.9
    # both look for small perturbations: far below the blob's contrast
    assert float((df - x).flatten(1).norm(dim=1).median()) < 3.0
    assert float((cw - x)[fooled].flatten(1).norm(dim=1).median()) < 3.0


def test_pgd_restarts_keep_successes(trained, test_set):
    x, y = test_set[0][:64].float() / 255, test_set[1][:64]
    torch.manual_seed(0)
    one = accuracy(trained, A.pgd(trained, x, y, 0.08, steps=5), y)
    torch.manual_seed(0)
    three = accuracy(trained, A.pgd(trained, x, y, 0.08, steps=5, restarts=3), y)
    assert three <= one


# ------------------------------------------------------------------ agreement with torchattacks
def test_fgsm_matches_torchattacks(trained, test_set):
    ta = pytest.importorskip("torchattacks")
    x, y = test_set[0][:100].float() / 255, test_set[1][:100]
    ours = A.fgsm(trained, x, y, 8 / 255)
    theirs = ta.FGSM(trained, eps=8 / 255)(x, y)
    assert float((ours - theirs).abs().max()) <= 1 / 255 + 1e-6


@pytest.mark.parametrize("method", ["pgd", "bim", "mifgsm"])
def test_deterministic_iterations_match_torchattacks(method, trained, test_set):
    ta = pytest.importorskip("torchattacks")
    x, y = test_set[0][:100].float() / 255, test_set[1][:100]
    eps, alpha, steps = 0.1, 0.02, 5
    if method == "pgd":
        ours = A.pgd(trained, x, y, eps, steps=steps, step_size=alpha, random_start=False)
        theirs = ta.PGD(trained, eps=eps, alpha=alpha, steps=steps, random_start=False)(x, y)
    elif method == "bim":
        ours = A.bim(trained, x, y, eps, steps=steps, step_size=alpha)
        theirs = ta.BIM(trained, eps=eps, alpha=alpha, steps=steps)(x, y)
    else:
        ours = A.mifgsm(trained, x, y, eps, steps=steps, step_size=alpha)
        theirs = ta.MIFGSM(trained, eps=eps, alpha=alpha, steps=steps)(x, y)
    # same algorithm: pixels agree except where a gradient component is ~0 and its sign is a coin flip
    assert float(((ours - theirs).abs() > 1 / 255).float().mean()) < 0.01


def test_pgd_robust_accuracy_matches_torchattacks(trained, test_set):
    ta = pytest.importorskip("torchattacks")
    x, y = test_set[0].float() / 255, test_set[1]
    eps = 0.12
    # the same random start (seed) for both; across seeds this eps moves the accuracy by a few points
    torch.manual_seed(0)
    ours = accuracy(trained, A.pgd(trained, x, y, eps, steps=10, step_size=eps / 4), y)
    torch.manual_seed(0)
    theirs = accuracy(trained, ta.PGD(trained, eps=eps, alpha=eps / 4, steps=10)(x, y), y)
    assert abs(ours - theirs) <= 0.015, (ours, theirs)


# ------------------------------------------------------------------ one image, a test set
def test_attack_image_reports_and_transforms(trained, test_set):
    x = test_set[0][:1].float() / 255
    goal = (int(test_set[1][0]) + 1) % USED
    res = attack_image(trained, trained.classes, x, _cfg("pgd", 0.3, steps=20), target=goal,
                       transforms=parse_transforms("jpeg:90,blur:0.3"))
    assert res.success and res.after[0].index == goal and res.target.index == goal
    assert res.linf <= 0.3 + 1e-6 and res.l2 > 0
    assert len(res.before) == 5 and res.transformed is not None and isinstance(res.survives, bool)
    assert abs(sum(p.confidence for p in res.before) - 1) < 0.5


def test_robustness_rows(trained, test_set):
    x, y = test_set
    cfgs = [_cfg("fgsm", 0), _cfg("deepfool", 0, steps=10)]
    rows = robustness(trained, x[:60], y[:60], cfgs, [0.0, 0.05, 0.3], batch_size=25, device="cpu")
    assert len(rows) == 6
    clean = accuracy(trained, x[:60].float() / 255, y[:60])
    for r in rows:
        assert {"method", "eps", "accuracy", "success_rate", "linf", "l2", "n"} <= set(r)
        assert r["n"] == 60 and r["linf"] <= r["eps"] + 1e-6
        if r["eps"] == 0:
            assert r["accuracy"] == pytest.approx(clean) and r["success_rate"] == 0
    fg = {r["eps"]: r["accuracy"] for r in rows if r["method"] == "fgsm"}
    assert fg[0.3] < fg[0.0]


def test_transforms_and_targets():
    x = torch.rand(2, 3, 16, 16)
    y = apply_transforms(x, parse_transforms("jpeg:75,resize:0.5,blur:1,noise:2"))
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    classes = ["tabby", "tiger cat", "gibbon", "giant panda", "red panda"]
    assert resolve_target("gibbon", classes) == 2 and resolve_target("Gibbon", classes) == 2
    assert resolve_target("3", classes) == 3 and resolve_target("tiger", classes) == 1
    for bad, words in (("5", "out of range"), ("-1", "out of range"), ("panda", "several"), ("zebra", "unknown")):
        with pytest.raises(UsageError, match=words):
            resolve_target(bad, classes)


def test_select_first_per_class():
    from dlkit.tasks.adversarial.data import select

    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])  # sorted by class, as cifar10_jpeg.npz
    images = torch.arange(9).view(9, 1, 1, 1)
    x, y = select(images, labels, per_class=2)
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and x.flatten().tolist() == [0, 1, 3, 4, 6, 7]
    assert select(images, labels, limit=4, per_class=2)[1].tolist() == [0, 0, 1, 1]


def test_torchvision_victim_never_downloads(tmp_path, monkeypatch):
    from dlkit.tasks.adversarial.model import load_victim

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelFileError, match="not on this machine"):
        load_victim("torchvision:squeezenet1_1")
    with pytest.raises(UsageError, match="no model"):
        load_victim("torchvision:nosuchnet")
    # with the weights file in torch's cache it loads, with ImageNet categories and its transforms
    import torchvision

    w = torchvision.models.SqueezeNet1_1_Weights.DEFAULT
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(torchvision.models.squeezenet1_1().state_dict(), cache / Path(w.url).name)
    v = load_victim("torchvision:squeezenet1_1")
    assert v.classes[285] == "Egyptian cat" and v.input_size == (3, 224, 224) and v.resize == 256
    assert v.model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


# ------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("adv")
    save_classifier(d / "toy.safetensors", trained, arch="mnist-cnn", arch_kwargs={"width": 4},
                    classes=trained.classes, input_size=(1, SIDE, SIDE), mean=(0.2,), std=(0.3,))
    x, y = toy_data(24, seed=5)
    Image.fromarray(x[0, 0].numpy()).save(d / "digit.png")
    Image.fromarray(np.repeat(x[1, 0].numpy()[..., None], 3, 2)).resize((30, 24)).save(d / "rgb.png")
    folder = d / "folder"
    for i in range(len(y)):
        (folder / str(int(y[i]))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(folder / str(int(y[i])) / f"{i}.png")
    np.savez(d / "mnist.npz", x_train=x[:, 0].numpy(), y_train=y.numpy().astype(np.uint8),
             x_test=x[:, 0].numpy(), y_test=y.numpy().astype(np.uint8))
    return d


def test_cli_one_image(invoke, files, tmp_path):
    out, fig = tmp_path / "adv.png", tmp_path / "fig.png"
    r = invoke("adv-attack", files / "digit.png", "--model", files / "toy.safetensors", "--eps", "0.3",
               "--method", "pgd", "-o", out, "--figure", fig, "--transform", "jpeg:75,blur:1")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("pgd eps 0.3 on toy") and "before" in lines[1]
    assert any(line.startswith("perturbation: L-inf 0.3") for line in lines)
    assert any("the attack" in line for line in lines)
    assert lines[-2:] == [str(out), str(fig)]
    adv = np.asarray(Image.open(out))
    clean = np.asarray(Image.open(files / "digit.png"))
    assert adv.shape == clean.shape and np.abs(adv.astype(int) - clean).max() <= 0.3 * 255 + 0.5  # 8-bit rounding
    assert fig.stat().st_size > 1000
    goal = str((int(toy_data(24, seed=5)[1][0]) + 1) % USED)
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", "--eps", "0.4", "--target", goal,
               "--method", "pgd,fgsm", "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["method"] for x in recs] == ["pgd", "fgsm"] and recs[0]["target"]["index"] == int(goal)
    assert recs[0]["success"] and recs[0]["eps"] == pytest.approx(0.4) and r.stderr == ""


def test_cli_notes_conversions_and_warns_on_jpeg(invoke, files, tmp_path):
    r = invoke("adv-attack", files / "rgb.png", "-m", files / "toy.safetensors", "--eps", "16", "-o", tmp_path / "a.jpg")
    assert r.exit_code == 0, r.stderr
    assert "converted from RGB to L" in r.stderr and "30x24 resized" in r.stderr
    assert "JPEG" in r.stderr and "warning" in r.stderr
    deep = tmp_path / "deep.png"  # 16-bit grey: scaled to 8 bits, not clipped
    Image.fromarray(np.asarray(Image.open(files / "digit.png")).astype(np.uint16) * 257).save(deep)
    assert Image.open(deep).mode.startswith("I")
    r = invoke("adv-attack", deep, "-m", files / "toy.safetensors", "--eps", "4", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["before"][0]["confidence"] > 0.9


def test_cli_dataset_mode(invoke, files, tmp_path):
    plot, npz = tmp_path / "acc.png", tmp_path / "adv.npz"
    r = invoke("adv-attack", "--dataset", "mnist", "--data", files / "mnist.npz", "-m", files / "toy.safetensors",
               "--method", "fgsm,pgd", "--eps", "0,8,0.3", "--limit", "20", "--batch-size", "8", "--json",
               "--plot", plot, "--save-adv", npz)
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(recs) == 6
    for rec in recs:
        assert {"method", "eps", "accuracy", "success_rate", "linf", "l2", "n"} <= set(rec) and rec["n"] == 20
    accs = {(x["method"], round(x["eps"], 4)): x["accuracy"] for x in recs}
    assert accs[("fgsm", 0.0)] == accs[("pgd", 0.0)] >= 0.9
    assert accs[("pgd", 0.3)] < accs[("pgd", 0.0)]
    assert plot.stat().st_size > 1000
    with np.load(npz) as z:
        assert z["pgd_eps8"].shape == (20, 1, SIDE, SIDE) and z["labels"].shape == (20,)
    # an image folder, a table for people
    r = invoke("adv-attack", "--data", files / "folder", "-m", files / "toy.safetensors", "--eps", "0,0.2",
               "--method", "bim", "--transform", "blur:1", "--per-class", "2", "--save-adv", tmp_path / "advdir")
    assert r.exit_code == 0, r.stderr
    assert len(list((tmp_path / "advdir" / "bim").rglob("*.png"))) == 8
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["method", "eps", "accuracy"] and lines[1].startswith("clean")
    assert lines[2].startswith("bim") and "destroyed" in lines[0] and "(n = 8)" in lines[1]


@pytest.mark.parametrize("args,words", [
    (["--eps", "-1"], "negative"),
    (["--eps", "300"], "above 255"),
    (["--eps", "8/0"], "division by zero"),
    (["--target", "zebra"], "unknown class"),
    (["--target", "12"], "out of range"),
    (["--method", "ill", "--target", "3"], "cannot be targeted"),
    (["--method", "nope"], "unknown attack"),
    (["--transform", "jpeg:0"], "out of range"),
    (["--eps", "1,2"], "one --eps"),
    (["--plot", "x.png"], "dataset mode"),
    (["--figure", "fig.jpg"], "PNG"),
    (["--step-size", "0"], "positive"),
])
def test_cli_bad_options(invoke, files, args, words):
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", *args)
    assert r.exit_code != 0
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_bad_files(invoke, files, tmp_path):
    from dlkit.core.modelfile import save_model

    other = tmp_path / "lm.safetensors"
    save_model(other, {"w": torch.zeros(2)}, {"task": "lm"})
    truncated = tmp_path / "cut.png"
    truncated.write_bytes((files / "digit.png").read_bytes()[:60])
    text = tmp_path / "mnist.npz"
    text.write_text("not an npz")
    cases = [
        (["adv-attack", files / "digit.png", "-m", other], "classifier"),
        (["adv-attack", truncated, "-m", files / "toy.safetensors"], "cut.png"),
        (["adv-attack", tmp_path / "missing.png", "-m", files / "toy.safetensors"], "missing.png"),
        (["adv-attack", "--dataset", "mnist", "--data", text, "-m", files / "toy.safetensors"], "mnist.npz"),
        (["adv-attack", "--dataset", "mnist", "--data", tmp_path / "nope.npz", "-m", files / "toy.safetensors"], "nope.npz"),
        (["adv-attack", files / "digit.png", "-m", "torchvision:resnet18"], "never downloads"),
        (["adv-attack"], "give an image"),
    ]
    for args, words in cases:
        r = invoke(*args)
        assert r.exit_code != 0, args
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
