"""The classifier file contract and the shared classification loop."""

import pytest
import torch

from dlkit.core.errors import ModelFileError
from dlkit.core.runtime import make_runtime
from dlkit.nets.classifiers import build_classifier
from dlkit.vision.classifier import (Classifier, evaluate, flip_translate, load_classifier, per_image_whiten, predict,
                                     save_classifier, train_epoch)


def tiny(arch="mlp-1x512", whiten=False, c=1, size=8):
    torch.manual_seed(0)
    net = build_classifier(arch, c, 3, size)
    return Classifier(net, arch=arch, classes=["a", "b", "c"], input_size=(c, size, size), mean=[0.5], std=[0.25],
                      whiten=whiten)


def blobs(n=96, size=8, seed=0):
    """Three classes told apart by where a bright square sits."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 60, (n, 1, size, size), generator=g).to(torch.uint8)
    for i, k in enumerate(y.tolist()):
        x[i, 0, 2 * k:2 * k + 3, 2:5] = 250
    return x, y


def test_normalisation_whitening_and_crop():
    clf = tiny()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(clf.normalize(x), (x - 0.5) / 0.25)
    assert clf.normalize(torch.rand(2, 1, 12, 12)).shape == (2, 1, 8, 8)  # centre crop
    w = per_image_whiten(torch.rand(4, 3, 5, 5) * 7 + 3)
    assert torch.allclose(w.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(w.std(dim=(1, 2, 3), unbiased=False), torch.ones(4), atol=1e-4)
    assert per_image_whiten(torch.full((1, 3, 4, 4), 0.3)).abs().max() == 0  # constant image: no division by 0
    assert clf.mean == (0.5,) and clf.input_size == (1, 8, 8)


def test_gradients_reach_the_pixels():
    clf = tiny("mnist-cnn", size=8).eval()
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    clf(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_flip_translate():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = flip_translate(x, g, flip=False, pad=0)
    assert torch.equal(out, x)
    out = flip_translate(x, torch.Generator().manual_seed(1), flip=True, pad=1)
    assert out.shape == x.shape
    flipped = flip_translate(x, torch.Generator().manual_seed(3), flip=True, pad=0)
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(2))


def test_train_epoch_learns_and_is_deterministic():
    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    x, y = blobs()
    accs = []
    for _ in range(2):
        clf = tiny()
        opt = torch.optim.SGD(clf.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        before = evaluate(clf, x, y, rt)[0]
        for _ in range(8):
            res = train_epoch(clf, x, y, opt, rt, batch_size=16, generator=g, log_every=2)
        loss, acc = evaluate(clf, x, y, rt)
        accs.append((loss, acc))
    assert res.steps == 6 and len(res.losses) == 3
    assert accs[0][0] < before and accs[0][1] > 0.9
    assert accs[0] == accs[1]
    assert predict(clf, x[:5], rt).shape == (5, 3)


def test_bf16_autocast_runs():
    rt = make_runtime("cpu", "bf16", 0, distributed=False)
    x, y = blobs(32)
    clf = tiny("mnist-cnn")
    opt = torch.optim.SGD(clf.parameters(), lr=0.05, momentum=0.9)
    res = train_epoch(clf, x, y, opt, rt, batch_size=16, generator=torch.Generator().manual_seed(0))
    assert res.steps == 2 and res.loss == res.loss


def test_save_load_round_trip(tmp_path):
    clf = tiny("mnist-cnn", whiten=True).eval()
    path = save_classifier(tmp_path / "m.safetensors", clf, arch="mnist-cnn", arch_kwargs={}, classes=clf.classes,
                           input_size=clf.input_size, mean=clf.mean, std=clf.std, whiten=True,
                           metrics={"test_accuracy": 0.5})
    back = load_classifier(path)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(back(x), clf(x)) and not back.training
    assert back.classes == ["a", "b", "c"] and back.whiten and back.meta["metrics"]["test_accuracy"] == 0.5
    half = load_classifier(save_classifier(tmp_path / "h.safetensors", clf, arch="mnist-cnn", arch_kwargs={},
                                           classes=clf.classes, input_size=clf.input_size, mean=clf.mean, std=clf.std,
                                           whiten=True, dtype=torch.float16))
    assert torch.allclose(half(x), clf(x), atol=0.05)


def test_refuses_foreign_files(tmp_path):
    from dlkit.core.modelfile import save_model

    other = save_model(tmp_path / "gan.safetensors", {"w": torch.zeros(2)}, {"task": "gan"})
    with pytest.raises(ModelFileError, match="'gan' model"):
        load_classifier(other)
    pickle = tmp_path / "p.safetensors"
    torch.save({"w": torch.zeros(2)}, pickle)
    with pytest.raises(ModelFileError):
        load_classifier(pickle)
    good = save_classifier(tmp_path / "g.safetensors", tiny(), arch="mlp-1x512", arch_kwargs={}, classes=["a", "b", "c"],
                           input_size=(1, 8, 8), mean=[0.5], std=[0.25])
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="truncated"):
        load_classifier(truncated)
    with pytest.raises(ModelFileError, match="no model named"):
        load_classifier("no-such-classifier")


def test_bundled_mnist_cnn_loads():
    from dlkit.core.zoo import ZOO_DIR

    if not (ZOO_DIR / "mnist-cnn.safetensors").exists():
        pytest.skip("mnist-cnn not bundled")
    clf = load_classifier("mnist-cnn")
    assert clf.input_size == (1, 28, 28) and len(clf.classes) == 10
    assert clf(torch.rand(2, 1, 28, 28)).shape == (2, 10)
