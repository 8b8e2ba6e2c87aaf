"""adv-attack against hostile input: outputs never replaced, crafted metadata and data files, non-finite
options, class folders matched by name. Every refusal is one line on stderr and a non-zero exit."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlkit.vision.classifier import Classifier, save_classifier

SIDE = 12
pytestmark = pytest.mark.usefixtures("one_thread")


def toy(n: int, seed: int):
    """uint8 (n, 12, 12): a bright 4x4 blob in quadrant y on noise; y in 0..3."""
    g = np.random.default_rng(seed)
    y = g.integers(0, 4, n)
    x = g.random((n, SIDE, SIDE)) * 0.3
    for i, k in enumerate(y):
        t, left = (k // 2) * 6 + g.integers(0, 3), (k % 2) * 6 + g.integers(0, 3)
        x[i, t:t + 4, left:left + 4] = 0.7 + 0.3 * g.random((4, 4))
    return (x * 255).round().astype(np.uint8), y.astype(np.int64)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A toy classifier (classes "0".."9", 4 used) trained for a second, a photo, an .npz and folders."""
    from dlkit.nets.classifiers import build_classifier

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("advh")
    net = build_classifier("cnn-small", 1, 10, SIDE, width=8)
    model = Classifier(net, arch="cnn-small", arch_kwargs={"width": 8}, classes=[str(i) for i in range(10)],
                       input_size=(1, SIDE, SIDE))
    x, y = toy(400, 0)
    xt, yt = torch.from_numpy(x).float().unsqueeze(1) / 255, torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(120):
        idx = torch.randint(0, len(yt), (64,))
        loss = F.cross_entropy(model(xt[idx]), yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_classifier(d / "toy.safetensors", model, arch="cnn-small", arch_kwargs={"width": 8},
                    classes=model.classes, input_size=(1, SIDE, SIDE), mean=(0.0,), std=(1.0,))
    xs, ys = toy(40, 1)
    Image.fromarray(xs[0]).save(d / "digit.png")
    np.savez(d / "mnist.npz", x_train=xs, y_train=ys.astype(np.uint8), x_test=xs, y_test=ys.astype(np.uint8))
    for name, shift in (("named", 0), ("shifted", 1)):  # folders "0".."3", and "1".."4" (not the model's "1".."4")
        for i in range(len(ys)):
            folder = d / name / str(int(ys[i]) + shift)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(xs[i]).save(folder / f"{i}.png")
    return d


def one_line_error(r, *words):
    assert r.exit_code != 0, r.stdout
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "unexpected" not in err, err
    for w in words:
        assert w in err, err


# ------------------------------------------------------------------ outputs are never replaced
def test_out_existing_file_is_kept(invoke, files, tmp_path):
    out = tmp_path / "adv.png"
    out.write_bytes(b"precious")
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", "--eps", "0.2", "-o", out)
    one_line_error(r, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", "--eps", "0.2", "-o", out,
               "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert Image.open(out).size == (SIDE, SIDE)
    before = (files / "digit.png").read_bytes()  # the input itself, even with --overwrite
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", "-o", files / "digit.png",
               "--overwrite")
    one_line_error(r, "input")
    assert (files / "digit.png").read_bytes() == before


def test_save_adv_and_plot_are_kept(invoke, files, tmp_path):
    npz, folder, plot = tmp_path / "adv.npz", tmp_path / "advdir", tmp_path / "acc.png"
    npz.write_bytes(b"old")
    (folder / "pgd").mkdir(parents=True)
    (folder / "pgd" / "mine.png").write_bytes(b"old")
    plot.write_bytes(b"old")
    base = ["adv-attack", "--dataset", "mnist", "--data", files / "mnist.npz", "-m", files / "toy.safetensors",
            "--eps", "0,0.1", "--limit", "8"]
    one_line_error(invoke(*base, "--save-adv", npz), "already exists")
    one_line_error(invoke(*base, "--save-adv", folder), "not empty", "--overwrite")
    one_line_error(invoke(*base, "--plot", plot), "already exists")
    assert npz.read_bytes() == b"old" and plot.read_bytes() == b"old"
    r = invoke(*base, "--save-adv", npz, "--overwrite", "--json")
    assert r.exit_code == 0, r.stderr
    with np.load(npz) as z:
        assert z["fgsm_eps0.1"].shape == (8, 1, SIDE, SIDE)


# ------------------------------------------------------------------ crafted files
def test_crafted_input_size_is_refused(invoke, files, tmp_path):
    from dlkit.nets.classifiers import build_classifier

    kw = {"widths": [4, 4, 4], "stem": 4}
    net = build_classifier("resnet", 1, 10, SIDE, **kw)  # global pooling: its tensors fit any input size
    huge = tmp_path / "huge.safetensors"
    save_classifier(huge, net, arch="resnet", arch_kwargs=kw, classes=[str(i) for i in range(10)],
                    input_size=(1, 40000, 40000), mean=(0.0,), std=(1.0,))
    one_line_error(invoke("adv-attack", files / "digit.png", "-m", huge), "40000")
    nan = tmp_path / "nan.safetensors"
    save_classifier(nan, net, arch="resnet", arch_kwargs=kw, classes=[str(i) for i in range(10)],
                    input_size=(1, SIDE, SIDE), mean=(0.0,), std=(0.0,))
    one_line_error(invoke("adv-attack", files / "digit.png", "-m", nan), "std")


def _npz_bomb(path, shape):
    """An .npz whose one member declares ``shape`` (uint8) but holds a few bytes: a decompression bomb's header."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_test.npy", head.getvalue() + bytes(1000))
        z.writestr("y_test.npy", head.getvalue()[:0] + _npy(np.zeros(shape[0], np.uint8)))


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_npz_bomb_is_refused_before_reading(invoke, files, tmp_path):
    bomb = tmp_path / "bomb.npz"
    _npz_bomb(bomb, (100_000, 200, 200))  # 4 GB declared
    r = invoke("adv-attack", "--dataset", "mnist", "--data", bomb, "-m", files / "toy.safetensors", "--eps", "0,0.1")
    one_line_error(r, "bomb.npz")


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("args,words", [
    (["--method", "deepfool", "--overshoot", "inf"], "finite"), (["--method", "mifgsm", "--decay", "inf"], "finite"),
    (["--method", "cw", "--cw-c", "inf"], "finite"), (["--method", "cw", "--cw-lr", "inf"], "finite"),
    (["--method", "cw", "--cw-kappa", "nan"], "--cw-kappa"),  # refused by the option's range already
])
def test_non_finite_options_are_refused(invoke, files, args, words):
    one_line_error(invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", *args), words)


@pytest.mark.parametrize("args,words", [
    (["--data", "x.npz"], "dataset mode"),
    (["--robustness"], "dataset mode"),
    (["--save-adv", "a.npz"], "dataset mode"),
])
def test_photo_job_refuses_dataset_options(invoke, files, args, words):
    one_line_error(invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", *args), words)


def test_dataset_job_refuses_photo_options(invoke, files, tmp_path):
    base = ["adv-attack", "--dataset", "mnist", "--data", files / "mnist.npz", "-m", files / "toy.safetensors"]
    one_line_error(invoke(*base, "-o", tmp_path / "a.png"), "for one image")
    one_line_error(invoke(*base, "-m", files / "toy.safetensors", "--plot", tmp_path / "p.png"), "one --model")
    one_line_error(invoke("adv-attack", "--dataset", "mnist"), "needs --data")


# ------------------------------------------------------------------ class folders by name
def test_folders_are_matched_by_name(invoke, files):
    r = invoke("adv-attack", "--data", files / "named", "-m", files / "toy.safetensors", "--eps", "0", "--json")
    assert r.exit_code == 0, r.stderr
    clean = json.loads(r.stdout.splitlines()[0])["accuracy"]
    assert clean >= 0.9
    # "1".."4" are names of the model's classes too, but not these images' classes: matched by name, the
    # accuracy is what a mislabelled set gives (near 0), not a positional remapping that hides the mistake
    r = invoke("adv-attack", "--data", files / "shifted", "-m", files / "toy.safetensors", "--eps", "0", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["accuracy"] <= 0.1


def test_folder_names_outside_the_model_are_refused(invoke, files, tmp_path):
    folder = tmp_path / "ten"
    for i, name in enumerate(["1", "10"]):
        (folder / name).mkdir(parents=True)
        Image.fromarray(np.zeros((SIDE, SIDE), np.uint8)).save(folder / name / f"{i}.png")
    one_line_error(invoke("adv-attack", "--data", folder, "-m", files / "toy.safetensors"), "'10'", "not classes")


def test_mnist_set_against_cifar_model_is_refused(invoke, files, tmp_path):
    from dlkit.nets.classifiers import build_classifier
    from dlkit.vision.datasets import CIFAR10_CLASSES

    cifar = tmp_path / "cifar.safetensors"
    save_classifier(cifar, build_classifier("cnn-small", 3, 10, 32), arch="cnn-small", arch_kwargs={},
                    classes=CIFAR10_CLASSES, input_size=(3, 32, 32), mean=(0.5,), std=(0.25,))
    r = invoke("adv-attack", "--dataset", "mnist", "--data", files / "mnist.npz", "-m", cifar)
    one_line_error(r, "not classes of the model", "airplane")


# ------------------------------------------------------------------ a closed stdout
class _ClosedPipe:
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_closed_stdout_finishes_the_work_and_exits_141(invoke, files, tmp_path, monkeypatch):
    from dlkit.core.io import results

    monkeypatch.setattr(results, "_stream", _ClosedPipe())
    out = tmp_path / "adv.png"
    r = invoke("adv-attack", files / "digit.png", "-m", files / "toy.safetensors", "--eps", "0.2", "-o", out)
    assert r.exit_code == 141 and out.exists()  # the file named by -o is written; exit is never 0
    r = invoke("adv-attack", "--dataset", "mnist", "--data", files / "mnist.npz", "-m", files / "toy.safetensors",
               "--eps", "0,0.1", "--limit", "8", "--json")
    assert r.exit_code == 141
