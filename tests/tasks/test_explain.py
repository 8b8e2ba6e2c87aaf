"""explain: map shapes, maps of a model that only sees the left half, deletion AUC against a random map, the
randomisation sanity check, and the command end to end on a tiny classifier file (CPU, seconds)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from dlkit.tasks.explain.data import fit_photo, resolve_target, to_photo_grid
from dlkit.tasks.explain.methods import METHODS, Explainer, MethodConfig, parse_methods
from dlkit.tasks.explain.sanity import cascading_randomisation, depths
from dlkit.tasks.explain.scores import (auc, baseline_images, blur, coarse_random_map, curves, faithfulness,
                                        gaussian_map, mean_colour, random_map, ranking)

pytestmark = pytest.mark.usefixtures("one_thread")
SIDE = 16
FAST = MethodConfig(ig_steps=8, smooth_samples=4, batch=8)


class LeftHalf(nn.Module):
    """A conv net that only sees the left half of the image: the right half is multiplied by 0 first.

    Positive filters without biases and a head that adds the features into class 0: brighter left pixels mean
    a more confident class 0, and deleting them (to black) lowers it."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("mask", torch.cat([torch.ones(SIDE, SIDE // 2), torch.zeros(SIDE, SIDE // 2)], 1))
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        self.head = nn.Linear(6, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.rand(self.conv1.weight.shape, generator=g) * 0.3)
            self.conv2.weight.copy_(torch.rand(self.conv2.weight.shape, generator=g) * 0.3)
            self.head.weight.copy_(torch.tensor([[0.1] * 6, [0.0] * 6, [-0.1] * 6]))  # p(class 0): 0.9 -> 0.06 on black
            self.head.bias.copy_(torch.tensor([-2.0, 0.0, 0.0]))

    def forward(self, x):
        x = x * self.mask  # (B, 3, H, W), right half gone
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def image(seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, SIDE, SIDE, generator=g)


@pytest.fixture(scope="module")
def left():
    return LeftHalf().eval()


@pytest.mark.parametrize("method", METHODS)
def test_maps_have_the_input_grid_and_are_non_negative(left, method):
    m = Explainer(left, (3, SIDE, SIDE), FAST).attribute(image(), 0, method)
    assert m.shape == (1, SIDE, SIDE) and m.dtype == torch.float32
    assert bool((m >= 0).all()) and float(m.sum()) > 0


@pytest.mark.parametrize("method", ["saliency", "smoothgrad", "integrated-gradients", "gradcam", "occlusion",
                                    "guided-backprop"])
def test_maps_put_their_mass_where_the_model_looks(left, method):
    m = Explainer(left, (3, SIDE, SIDE), FAST).attribute(image(), 0, method)[0]
    share = float(m[:, : SIDE // 2].sum() / m.sum())
    # gradient methods give exactly 0 on the right; Grad-CAM's bilinear upsampling and the occlusion window
    # spill a little over the border column
    assert share > 0.9, share


def test_photo_grid_round_trip():
    img = Image.fromarray((np.random.default_rng(0).random((30, 50, 3)) * 255).astype(np.uint8))
    x, geo = fit_photo(img, (3, SIDE, SIDE))
    assert x.shape == (3, SIDE, SIDE) and geo.original == (30, 50) and geo.resized == (16, 27)
    m = to_photo_grid(torch.ones(SIDE, SIDE), geo)
    assert m.shape == (30, 50)  # the photo's own pixel grid
    assert float(m[:, 25].min()) > 0.9  # the centre was seen
    assert float(m[:, 0].max()) == 0.0  # the border the crop cut was not
    grey, _ = fit_photo(img, (1, 8, 8))
    assert grey.shape == (1, 8, 8)


def test_deletion_of_the_true_map_beats_random(left):
    x = image()[0]
    ex = Explainer(left, (3, SIDE, SIDE), FAST)
    sal = ex.attribute(x[None], 0, "saliency")[0]
    true = curves(left, x, sal, 0, "zero", steps=16, batch=8)
    rand = curves(left, x, random_map(SIDE, SIDE, seed=3), 0, "zero", steps=16, batch=8)
    assert true.deletion[0] == pytest.approx(rand.deletion[0]) and true.deletion[-1] == pytest.approx(rand.deletion[-1])
    assert true.deletion_auc < rand.deletion_auc - 0.05
    assert true.insertion_auc > rand.insertion_auc + 0.05
    scores = faithfulness(left, x, {"saliency": sal}, 0, "blur", steps=8)
    assert set(scores) == {"saliency", "random", "gaussian"}
    assert scores["saliency"]["deletion"] < scores["random"]["deletion"]


def test_auc_and_reference_maps():
    assert auc([1.0, 1.0, 1.0]) == pytest.approx(1.0) and auc([1.0, 0.0]) == pytest.approx(0.5)
    g = gaussian_map(9, 7)
    assert g.shape == (9, 7) and int(g.argmax()) == 4 * 7 + 3
    assert torch.equal(random_map(4, 4, 1), random_map(4, 4, 1))
    assert not torch.equal(random_map(4, 4, 1), random_map(4, 4, 2))
    coarse = coarse_random_map(28, 42, grid=7, seed=1)
    assert coarse.shape == (28, 42) and torch.equal(coarse, coarse_random_map(28, 42, grid=7, seed=1))
    fine = random_map(28, 42, 1)
    step = lambda m: float((m[:, 1:] - m[:, :-1]).abs().mean())  # noqa: E731
    assert step(coarse) < step(fine) / 4  # neighbours nearly agree: blobs, not speckle


class Recorder(nn.Module):
    """Logits from the mean brightness of the left half; keeps the (normalised) images it was given."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        left = x[..., : SIDE // 2].mean(dim=(1, 2, 3))
        return torch.stack([4 * left, torch.zeros_like(left)], 1)


def test_rise_deletes_to_what_the_normalisation_maps_to_zero():
    from dlkit.vision.classifier import Classifier

    net = Recorder()
    clf = Classifier(net, arch="toy", classes=["a", "b"], input_size=(3, SIDE, SIDE), mean=(0.2, 0.4, 0.6),
                     std=(0.5, 0.5, 0.5)).eval()
    x = image()[0]
    assert torch.allclose(mean_colour(clf, x).flatten(), torch.tensor([0.2, 0.4, 0.6]))
    cv = curves(clf, x, random_map(SIDE, SIDE), 0, "rise", steps=4, batch=8)
    assert len(cv.deletion) == len(cv.insertion) == 5
    gone, start = net.seen[0][-1], net.seen[1][0]  # all deleted / nothing inserted yet (normalised)
    assert float(gone.abs().max()) < 1e-6  # Petsiuk et al.'s zeros of the normalised tensor: the mean colour
    assert torch.allclose(start, clf.normalize(blur(x[None]))[0], atol=1e-6)  # insertion starts from the blur
    black, _ = baseline_images(x[None], "zero")
    assert float(black.abs().max()) == 0.0
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_images(x[None], "grey")


class Detail(nn.Module):
    """Class 0 from the fine detail of the left half (mean |horizontal difference|): blurring it away, not only
    blackening it, must lower the class; the right half is never looked at."""

    side = 32  # RISE's blur, scaled to the image, needs some pixels to remove the detail of noise

    def forward(self, x):
        d = (x[..., 1:] - x[..., :-1]).abs()[..., : self.side // 2 - 1].mean(dim=(1, 2, 3))  # noise 0.34, blurred 0.09
        return torch.stack([20 * (d - 0.2), torch.zeros_like(d)], 1)


@pytest.mark.parametrize("baseline", ["blur", "mean", "rise"])
def test_deletion_of_the_known_map_beats_its_mirror(baseline):
    model, side = Detail().eval(), Detail.side
    x = torch.rand(3, side, side, generator=torch.Generator().manual_seed(2))  # noise: p(class 0) about 0.94
    half = torch.cat([torch.ones(side, side // 2), torch.zeros(side, side // 2)], 1)  # the true map: left half
    true = curves(model, x, half, 0, baseline, steps=16, batch=8)
    mirror = curves(model, x, 1 - half, 0, baseline, steps=16, batch=8)
    assert true.deletion[0] > 0.8 and mirror.deletion[8] > 0.8  # deleting the unseen half changes nothing
    assert true.deletion[8] < 0.2  # the left half blurred (or flattened) away: the class is gone
    assert true.deletion_auc < mirror.deletion_auc - 0.2
    assert true.insertion_auc > mirror.insertion_auc + 0.2


def test_ties_are_ordered_by_the_signed_evidence(left):
    order = ranking(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, -1.0, 2.0, 0.5]))
    assert order.tolist() == [0, 2, 3, 1]  # the plateau: most evidence first, counter-evidence last
    assert ranking(torch.tensor([1.0, 0.0, 0.0, 0.0])).tolist() == [0, 1, 2, 3]  # no tie-break: row-major
    ex = Explainer(left, (3, SIDE, SIDE), FAST)
    for method in ("integrated-gradients", "gradcam"):
        m, evidence = ex.attribute_with_evidence(image(), 0, method)
        assert torch.equal(m, ex.attribute(image(), 0, method)) and evidence.shape == m.shape
        assert bool((m == 0).any())  # a clipped plateau (the unseen right half at least)
        ranked = m[0].reshape(-1)[ranking(m[0], evidence[0])]
        assert bool((ranked[1:] <= ranked[:-1]).all())  # the tie-break never reorders unequal pixels
    m, evidence = ex.attribute_with_evidence(image(), 0, "integrated-gradients")
    assert torch.equal(m, evidence.clamp_min(0))  # the map is the positive part of its evidence


class Plain(nn.Module):
    """A small random conv net (no mask) for the randomisation check."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def test_sanity_check_decorrelates_saliency():
    model = Plain().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = Explainer(model, (3, SIDE, SIDE), FAST)
    rows = cascading_randomisation(ex, image(), 0, ["saliency"], seed=0)
    assert [r.layers for r in rows] == depths(3) == [1, 2, 3]
    assert rows[0].down_to == "head" and rows[-1].down_to == "features.0"
    assert abs(rows[-1].spearman["saliency"]) < 0.5  # the map follows the weights, not the image
    same = cascading_randomisation(ex, image(), 0, ["saliency"], seed=0, at=[0])
    assert same[0].spearman["saliency"] == pytest.approx(1.0)  # nothing randomised: the same map
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was randomised


def test_parse_methods_and_targets():
    assert parse_methods("gradcam,saliency,gradcam") == ["gradcam", "saliency"]
    assert parse_methods("all") == list(METHODS)
    from dlkit.core.errors import UsageError

    with pytest.raises(UsageError, match="expected a comma list"):
        parse_methods("saliency,lime")
    classes = ["tabby", "tiger cat", "Egyptian cat", "gibbon"]
    assert resolve_target("2", classes) == 2 and resolve_target("GIBBON", classes) == 3
    assert resolve_target("egypt", classes) == 2
    with pytest.raises(UsageError, match="matches 2 classes"):
        resolve_target("cat", classes)
    with pytest.raises(UsageError, match="did you mean"):
        resolve_target("gibon", classes)
    with pytest.raises(UsageError, match="classes 0..3"):
        resolve_target("7", classes)


# ------------------------------------------------------------------ the command
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from dlkit.nets.classifiers import build_classifier
    from dlkit.vision.classifier import save_classifier

    d = tmp_path_factory.mktemp("explain")
    torch.manual_seed(0)
    net = build_classifier("mnist-cnn", 1, 3, 12, width=4).eval()
    save_classifier(d / "toy.safetensors", net, arch="mnist-cnn", arch_kwargs={"width": 4}, classes=["a", "b", "c"],
                    input_size=(1, 12, 12), mean=(0.5,), std=(0.25,))
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((12, 12)) * 255).astype(np.uint8)).save(d / "square.png")
    Image.fromarray((rng.random((18, 30, 3)) * 255).astype(np.uint8)).save(d / "wide.png")
    (d / "bad.png").write_bytes(b"not an image")
    return d


def test_cli_end_to_end(invoke, files, tmp_path):
    maps, figs = tmp_path / "maps", tmp_path / "figs"
    args = ["explain", files / "square.png", files / "wide.png", "--model", files / "toy.safetensors",
            "--method", "saliency,gradcam", "--save-map", maps, "-o", figs, "--scores", "--auc-steps", 4,
            "--sanity", "--compare-adversarial", "--eps", "8", "--json", "--quiet"]
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines()]  # stdout holds only the JSON records
    assert [rec["path"] for rec in recs] == [str(files / "square.png"), str(files / "wide.png")]
    rec = recs[1]
    assert rec["target"]["label"] in ("a", "b", "c") and len(rec["top"]) == 3
    assert set(rec["scores"]) == {"saliency", "gradcam", "random", "gaussian"}
    assert set(rec["sanity"][0]["spearman"]) == {"saliency", "gradcam"} and "scores" in rec["adversarial"]
    assert np.load(maps / "wide.gradcam.npy").shape == (18, 30)  # the input image's own grid
    assert np.load(maps / "square.saliency.npy").shape == (12, 12)
    assert (figs / "square.png").stat().st_size > 1000 and str(figs / "wide.png") in rec["written"]
    again = invoke(*args)  # never overwrite without --overwrite: each image reports it, exit 1
    assert again.exit_code == 1 and "already exists" in again.stderr and "pass --overwrite" in again.stderr
    assert invoke(*args, "--overwrite").exit_code == 0


def test_cli_text_output_and_bad_image(invoke, files, tmp_path):
    fig = tmp_path / "one.png"
    r = invoke("explain", files / "square.png", "-m", files / "toy.safetensors", "--method", "saliency", "-o", fig,
               "--target", "b")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [f'{files / "square.png"}: "b" ' + r.stdout.split('"b" ')[1].splitlines()[0],
                                     str(fig)]
    r = invoke("explain", files / "bad.png", files / "square.png", "-m", files / "toy.safetensors", "--method",
               "saliency", "--json")
    assert r.exit_code == 1
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert recs[0]["event"] == "error" and "bad.png" in recs[0]["path"] and recs[1]["path"].endswith("square.png")
    assert "bad.png" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, words", [
    (["--target", "zebra"], "not a class"),
    (["--method", "lime"], "expected a comma list"),
    (["-o", "x.gif"], ".png, .pdf or .svg"),
    (["--adv-target", "a"], "needs --compare-adversarial"),
    (["--compare-adversarial", "--eps", "0"], "budget"),
])
def test_cli_bad_options(invoke, files, args, words):
    r = invoke("explain", files / "square.png", "-m", files / "toy.safetensors", *args)
    assert r.exit_code == 2, r.stdout + r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


def test_cli_bad_model_and_one_file_for_many(invoke, files, tmp_path):
    r = invoke("explain", files / "square.png", "-m", files / "bad.png")
    assert r.exit_code != 0 and len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    r = invoke("explain", files / "square.png", files / "wide.png", "-m", files / "toy.safetensors",
               "-o", tmp_path / "f.png")
    assert r.exit_code == 2 and "give a folder" in r.stderr


def test_cli_folder_input_and_stdin(invoke, files, tmp_path):
    (files / "notes.txt").write_text("not an image")
    figs = tmp_path / "figs"
    r = invoke("explain", files, "-m", files / "toy.safetensors", "--method", "saliency", "-o", figs, "--json")
    assert r.exit_code == 1  # bad.png fails, the others are explained
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(rec["path"]).name for rec in recs] == ["bad.png", "square.png", "wide.png"]
    assert recs[0]["event"] == "error" and "skipped 2 file(s)" in r.stderr  # notes.txt and toy.safetensors
    assert sorted(p.name for p in figs.iterdir()) == ["square.png", "wide.png"]
    r = invoke("explain", "-", "-m", files / "toy.safetensors", "--method", "gradcam",
               input=f"{files / 'square.png'}\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"{files / 'square.png'}: ")


def test_same_seed_same_smoothgrad():
    ex = Explainer(Plain().eval(), (3, SIDE, SIDE), FAST)  # ReLUs that switch with the noise (LeftHalf's never do)
    a, b = ex.attribute(image(), 0, "smoothgrad", seed=3), ex.attribute(image(), 0, "smoothgrad", seed=3)
    assert torch.equal(a, b) and not torch.equal(a, ex.attribute(image(), 0, "smoothgrad", seed=4))


@pytest.mark.slow
def test_closed_stdout_finishes_the_work_and_exits_141(files, tmp_path):
    import os
    import subprocess
    import sys

    figs = tmp_path / "figs"
    p = subprocess.Popen([sys.executable, "-m", "dlkit", "explain", str(files / "square.png"), str(files / "wide.png"),
                          "-m", str(files / "toy.safetensors"), "--method", "saliency", "-o", str(figs), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    p.stdout.close()  # the reader left before the first result (`dlkit explain ... | head -0`)
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 141 and "Traceback" not in err
    assert sorted(f.name for f in figs.iterdir()) == ["square.png", "wide.png"]  # every figure still written


def test_efficientnet_family_layer_and_guided_relu6():
    from dlkit.nets.efficientnet import efficientnet_lite0
    from dlkit.tasks.explain.methods import gradcam_layer, guided_copy
    from dlkit.vision.classifier import Classifier

    torch.manual_seed(0)
    clf = Classifier(efficientnet_lite0(4), arch="efficientnet-lite0", classes=list("abcd"), input_size=(3, 64, 64),
                     mean=(0.5,), std=(0.5,)).eval()
    assert gradcam_layer(clf, clf.input_size) is clf.net._act_head
    copy, relus = guided_copy(clf)
    assert relus == 33  # stem, head, 15 expanding blocks x 2, the first block's depthwise activation
    x = torch.rand(1, 3, 64, 64)
    ex = Explainer(clf, clf.input_size, FAST)
    gbp, sal = ex.attribute(x, 0, "guided-backprop"), ex.attribute(x, 0, "saliency")
    assert gbp.shape == (1, 64, 64)
    assert not torch.allclose(gbp / gbp.max(), sal / sal.max(), atol=1e-3)  # Captum did override the ReLU6 gradients
    assert torch.equal(clf(x), copy(x))  # the copy computes the same logits
