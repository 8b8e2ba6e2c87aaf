"""Image captioning: model contract, metrics, learning on generated shapes, checkpoints, CLI, bad input."""

import json
import random

import pytest
import torch

from dlkit.core.errors import DataError, ModelFileError
from dlkit.tasks.caption.data import make_shapes_dataset
from dlkit.tasks.caption.vocab import Vocab, normalize, pad_batch, tokenize
from dlkit.tasks.caption.metrics import bleu_1_4, caption_scores, cider_d
from dlkit.tasks.caption.model import ARCHS, build_model, caption_loss, preset
from dlkit.text.tokens import BOS, EOS, PAD


def _decoder(arch, seed=0, vocab=20, feat=16):
    torch.manual_seed(seed)
    return build_model(preset("tiny", arch=arch, vocab_size=vocab, feat_dim=feat))


# ---------------------------------------------------------------- model contract
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_gradients_and_seed(arch):
    m = _decoder(arch)
    feats, x = torch.randn(3, 9, 16), torch.randint(4, 20, (3, 6))
    logits, alphas = m(feats, x)
    assert logits.shape == (3, 6, 20)
    assert (alphas is None) == (arch == "nic")
    y = torch.randint(4, 20, (3, 6))
    loss, ce = caption_loss(logits, y, alphas)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    m2 = _decoder(arch)
    m.eval(), m2.eval()
    assert torch.equal(m(feats, x)[0], m2(feats, x)[0])


def test_attention_weights_sum_to_one_and_penalty():
    m = _decoder("attention").eval()
    feats, x = torch.randn(2, 9, 16), torch.randint(4, 20, (2, 5))
    _, alphas = m(feats, x)
    assert alphas.shape == (2, 5, 9)
    assert torch.allclose(alphas.sum(-1), torch.ones(2, 5), atol=1e-5)
    assert (alphas >= 0).all()
    y = torch.randint(4, 20, (2, 5))
    with_reg, ce = caption_loss(m(feats, x)[0], y, alphas, alpha_c=1.0)
    assert with_reg > ce  # 5 steps over 9 regions cannot cover every region once: a positive penalty


@pytest.mark.parametrize("arch", ARCHS)
def test_beam_1_equals_greedy(arch):
    from dlkit.text.search import beam_search, greedy

    m = _decoder(arch, seed=3).eval()
    enc = m.prepare(torch.randn(4, 9, 16))
    lens = torch.full((4,), 8)
    g = greedy(m, enc, lens)
    b = beam_search(m, enc, lens, beam=1)
    assert [h.tokens for h in g] == [r[0].tokens for r in b]
    assert [h.logprob for h in g] == pytest.approx([r[0].logprob for r in b], abs=1e-4)


def test_step_interface_matches_teacher_forcing():
    """The decoder's step (used by beam search) computes the same logits as its training forward."""
    for arch in ARCHS:
        m = _decoder(arch).eval()
        feats, x = torch.randn(2, 9, 16), torch.randint(4, 20, (2, 4))
        full, _ = m(feats, x)
        enc = m.prepare(feats)
        state = m.init_state(enc)
        for t in range(4):
            lg, state, _ = m.step(enc, state, x[:, t])
            assert torch.allclose(lg, full[:, t], atol=1e-5)


# ---------------------------------------------------------------- text and metrics
def test_tokenize_vocab_and_batches():
    assert tokenize("A dog's ball, red .") == ["a", "dog's", "ball", "red"]
    v = Vocab.build(["a dog", "a cat", "a dog runs"], min_count=2)
    assert v.words[4:] == ["a", "dog"]
    assert v.decode(v.encode("a dog runs")) == "a dog <unk>"
    assert Vocab.from_meta(v.to_meta()).words == v.words
    with pytest.raises(DataError, match="min-count"):
        Vocab.build(["a b"], min_count=3)
    x, y = pad_batch([[5, 6], [7]])
    assert x.tolist() == [[BOS, 5, 6], [BOS, 7, PAD]] and y.tolist() == [[5, 6, EOS], [7, EOS, PAD]]


HYPS = ["a dog runs through the grass", "a man is riding a bike on a road", "two children play in the water",
        "a black dog", "a woman in a red shirt is sitting on a bench"]
REFS = [["a brown dog is running through the green grass", "a dog runs across a field", "the dog is running on the grass"],
        ["a man rides a bicycle down the street", "a cyclist on a road", "a man is riding his bike on a country road"],
        ["two kids are playing in the water at the beach", "children splash in a pool", "two young children play in the ocean"],
        ["a black dog is jumping to catch a ball", "a dog with a ball", "a black and white dog plays in the yard"],
        ["a woman sits on a park bench", "a lady in red is sitting on a bench reading", "a woman wearing a red top sits outside"]]


def test_cider_d_and_bleu_match_pycocoevalcap():
    # Reference values produced once with pycocoevalcap 1.2 (pip install pycocoevalcap; not a dlkit dependency):
    #   Cider().compute_score({i: REFS[i]}, {i: [HYPS[i]]}) and Bleu(4).compute_score(same), on these exact strings.
    mean, per = cider_d(HYPS, REFS)
    assert mean == pytest.approx(2.0242047027525234, abs=1e-9)
    assert per == pytest.approx([1.8891868204337179, 2.455577312598389, 2.3419766284809103, 1.233760393027174,
                                 2.200522359222427], abs=1e-9)
    b = bleu_1_4(HYPS, REFS)
    assert [b[f"bleu{k}"] for k in range(1, 5)] == pytest.approx(
        [0.9142857142595919, 0.8188261051253097, 0.685290743714372, 0.503690370640337], abs=1e-6)


def test_cider_d_properties():
    assert cider_d(["a b c d"], [["a b c d"]])[0] == pytest.approx(0.0)  # one image: every idf is log(1/1) = 0
    perfect = cider_d(["a dog runs", "a cat sits"], [["a dog runs"], ["a cat sits"]])[1]
    wrong = cider_d(["a cat sits", "a dog runs"], [["a dog runs"], ["a cat sits"]])[1]
    assert perfect[0] > wrong[0] >= 0
    s = caption_scores(["a dog runs"] * 2, [["a dog runs", "a dog"], ["a cat sits"]])
    assert set(s) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider_d"}


# ---------------------------------------------------------------- learning
def _train_cfg(data, out, **kw):
    from dlkit.tasks.caption.train import TrainConfig

    base = dict(data=str(data), out=str(out), arch="attention", preset="tiny", encoder="tiny-cnn", min_count=1,
                val_images=8, epochs=10, batch_size=16, lr=3e-3, min_lr=3e-3, feature_cache="", patience=100, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg, stop=None):
    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.train import train

    return train(cfg, make_runtime("cpu", "fp32", cfg.seed, distributed=False), Reporter(quiet=True), stop)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n=48)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return _run(_train_cfg(shapes, out)), out


def test_tiny_model_learns_to_caption_shapes(trained, shapes):
    from dlkit.vision.caption_files import load_captions

    res, _ = trained
    data = load_captions(shapes)
    refs = [[normalize(c) for c in caps] for caps in data.captions]
    # chance: each image described with another image's caption (same template, other colour/shape/side)
    rng = random.Random(0)
    shuffled = [normalize(data.captions[rng.randrange(len(data))][0]) for _ in refs]
    chance = bleu_1_4(shuffled, refs)["bleu4"]
    assert res.best["bleu4"] > chance + 0.25, (res.best, chance)
    assert res.best["cider_d"] > 2.0
    assert [h["epoch"] for h in res.history] == list(range(1, 11))


def test_saved_model_reloads_and_captions_the_same(trained, shapes):
    """The model file captions as the trained network did: its validation scores, measured in memory during
    training on cached features, come back from the loaded file captioning the validation photos."""
    from dlkit.core.runtime import make_runtime
    from dlkit.core.state import load_state
    from dlkit.tasks.caption.infer import DecodeSettings, caption_files, load_captioner
    from dlkit.vision.caption_files import load_captions

    res, out = trained
    cap = load_captioner(str(out / "model.safetensors"))
    assert cap.cfg.arch == "attention" and cap.spec.name == "tiny-cnn" and cap.spec.stored
    data = load_captions(shapes)
    val = load_state(out / "model.state.pt")["split"]["val"]
    images = [str(data.images[i]) for i in val]
    got = []

    class Q:
        def warn(self, m): raise AssertionError(m)
        def event(self, *a, **k): pass
        def info(self, m): pass
        def progress(self, *a, **k):
            import contextlib
            return contextlib.nullcontext(lambda n=1, **f: None)

    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    outcome = caption_files(cap, images, rt, Q(), DecodeSettings(beam=3, batch_size=3), emit=got.append)
    assert outcome.failed == [] and [g.path for g in got] == images
    hyps = [g.captions[0].caption for g in got]
    scores = caption_scores(hyps, [[normalize(c) for c in data.captions[i]] for i in val])
    assert res.best["cider_d"] > 1.0  # a model worth comparing: it captions, not a constant sentence
    for k in ("bleu4", "cider_d"):
        assert scores[k] == pytest.approx(res.best[k], abs=1e-9), (k, scores, res.best)


def test_resume_equals_uninterrupted(shapes, tmp_path):
    from conftest import StopAt

    from dlkit.core.errors import Interrupted

    full = _run(_train_cfg(shapes, tmp_path / "full", epochs=2, arch="nic"))
    with pytest.raises(Interrupted):
        _run(_train_cfg(shapes, tmp_path / "part", epochs=2, arch="nic"), StopAt(3))
    resumed = _run(_train_cfg(shapes, tmp_path / "part", epochs=2, arch="nic", resume=True))
    assert resumed.history == full.history
    a = torch.load(tmp_path / "full" / "model.state.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "model.state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_stopped_mid_epoch_records_where(shapes, tmp_path):
    from dlkit.core.modelfile import read_meta

    res = _run(_train_cfg(shapes, tmp_path, epochs=2, arch="nic", max_time=1e-9))  # stops after the first batch
    scored = res.history[-1]["epoch"]
    assert 0 < scored < 1  # validated where --max-time stopped it, e.g. epoch 0.5
    meta = read_meta(tmp_path / "model.safetensors", "caption")
    assert meta["training"]["epochs"] == scored and f"(epoch {scored})" in meta["headline"]


def test_resume_needs_a_caption_state(shapes, tmp_path):
    from dlkit.core.errors import UsageError
    from dlkit.core.state import save_state

    with pytest.raises(UsageError, match="no saved training state"):
        _run(_train_cfg(shapes, tmp_path / "empty", resume=True))
    (tmp_path / "gan").mkdir()
    save_state(tmp_path / "gan" / "model.state.pt", {"step": 1, "config": {}}, task="gan")
    with pytest.raises(ModelFileError, match="saved by a 'gan' run; a 'caption' run cannot resume it"):
        _run(_train_cfg(shapes, tmp_path / "gan", resume=True))


def test_resume_with_other_shape_settings_is_refused(shapes, tmp_path):
    from dlkit.core.errors import UsageError

    _run(_train_cfg(shapes, tmp_path, epochs=1))
    with pytest.raises(UsageError, match="--arch nic"):
        _run(_train_cfg(shapes, tmp_path, epochs=2, arch="nic", resume=True))


def test_foreign_truncated_and_pickled_models_are_refused(trained, tmp_path):
    from dlkit.core.modelfile import save_model
    from dlkit.tasks.caption.infer import load_captioner

    _, out = trained
    other = tmp_path / "lm.safetensors"
    save_model(other, {"w": torch.zeros(2)}, {"task": "lm", "config": {}})
    with pytest.raises(ModelFileError, match="'lm' model"):
        load_captioner(str(other))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((out / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="truncated"):
        load_captioner(str(cut))
    pkl = tmp_path / "p.safetensors"
    torch.save({"x": 1}, pkl)
    with pytest.raises(ModelFileError):
        load_captioner(str(pkl))


def test_missing_images_are_reported_then_skipped_or_stop(shapes, tmp_path):
    bad = tmp_path / "caps.csv"
    text = shapes.read_text().replace("img047.png", "ghost1.png").replace("img046.png", "ghost2.png")
    bad.write_text(text)
    with pytest.raises(DataError, match="2 of 48 images .* do not exist.*ghost"):
        _run(_train_cfg(bad, tmp_path / "a", images=str(shapes.parent / "images"), on_missing="stop", epochs=1))
    res = _run(_train_cfg(bad, tmp_path / "b", images=str(shapes.parent / "images"), epochs=1, arch="nic"))
    assert res.epochs == 1


# ---------------------------------------------------------------- CLI
def _bad_inputs(folder):
    """The issue's bad and awkward inputs; returns (good files, bad files)."""
    import numpy as np
    from PIL import Image

    from dlkit.tasks.caption.data import shape_image

    folder.mkdir(parents=True, exist_ok=True)
    base = shape_image("red", "circle", "left", 40)
    good = []
    for name, img in [("rgb.jpg", base), ("cmyk.jpg", base.convert("CMYK")), ("palette.png", base.convert("P")),
                      ("rgba.png", base.convert("RGBA")), ("grey.png", base.convert("L")),
                      ("i16.png", Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257))]:
        img.save(folder / name)
        good.append(folder / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    base.save(folder / "exif.jpg", exif=exif)
    good.append(folder / "exif.jpg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    data = (folder / "rgb.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    return good, [folder / "empty.png", folder / "text.jpg", folder / "truncated.jpg"]


def test_cli_train_then_caption_files_in_order(invoke, shapes, tmp_path):
    out = tmp_path / "run"
    r = invoke("caption-train", "--data", shapes, "--encoder", "tiny-cnn", "--preset", "tiny", "--min-count", "1",
               "--val-images", "8", "--epochs", "2", "--lr", "0.003", "--no-feature-cache", "--out", out,
               "--threads", "1", "--arch", "nic")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out / "model.safetensors")
    assert "val:" in r.stderr
    r = invoke("caption-train", "--data", shapes, "--encoder", "tiny-cnn", "--out", out)
    assert r.exit_code != 0 and "--resume" in r.stderr
    model = out / "model.safetensors"
    imgs = sorted((shapes.parent / "images").glob("*.png"))[:3]
    one = invoke("caption", imgs[0], "--model", model)
    assert one.exit_code == 0 and "\t" not in one.stdout and len(one.stdout.splitlines()) == 1
    several = invoke("caption", *imgs, "--model", model, "--greedy")
    lines = several.stdout.splitlines()
    assert several.exit_code == 0 and [ln.split("\t")[0] for ln in lines] == [str(p) for p in imgs]
    js = invoke("caption", imgs[1], "--model", model, "--json", "--beam", "3", "--n-best", "2")
    rec = json.loads(js.stdout)
    assert set(rec) == {"path", "caption", "logprob", "n_best"} and len(rec["n_best"]) == 2
    assert rec["caption"] == rec["n_best"][0]["caption"]
    r = invoke("caption", imgs[0], "--model", model, "--attention-plot", tmp_path / "fig")
    assert r.exit_code != 0 and "attention model" in r.stderr


def test_cli_bad_inputs_one_line_each_and_exit_1(invoke, trained, tmp_path):
    _, out = trained
    good, bad = _bad_inputs(tmp_path / "in")
    args = [str(p) for p in good[:3]] + [str(b) for b in bad] + [str(tmp_path / "missing.jpg")] + [str(p) for p in good[3:]]
    r = invoke("caption", *args, "--model", out / "model.safetensors", "--batch-size", "4")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(p) for p in good]  # every good one, in order
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 4 and all(any(str(b) in w for w in warnings) for b in bad)
    assert "Traceback" not in r.stderr and "4 of 11 images failed" in r.stderr
    js = invoke("caption", good[0], bad[0], "--model", out / "model.safetensors", "--json")
    recs = sorted((json.loads(ln) for ln in js.stdout.splitlines()), key=lambda r: "event" in r)
    assert js.exit_code == 1 and recs[0]["path"] == str(good[0]) and recs[0]["caption"]
    assert recs[1] == {"event": "error", "path": str(bad[0]), "error": recs[1]["error"]} and "empty" in recs[1]["error"]


def test_cli_folder_glob_stdin_and_attention_plot(invoke, trained, tmp_path):
    _, out = trained
    good, _ = _bad_inputs(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("skip me")
    for p in (tmp_path / "in").iterdir():
        if p.name in ("empty.png", "text.jpg", "truncated.jpg"):
            p.unlink()
    model = out / "model.safetensors"
    r = invoke("caption", tmp_path / "in", "--model", model)
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == len(good) and "notes.txt" in r.stderr
    r = invoke("caption", good[0], "--model", model, "--attention-plot", tmp_path / "fig")
    assert r.exit_code == 0, r.stderr
    assert [p.name for p in (tmp_path / "fig").glob("*.png")] == [good[0].stem + ".png"]
    g = invoke("caption", str(tmp_path / "in" / "*.png"), "--model", model)
    assert len(g.stdout.splitlines()) == 4
    s = invoke("caption", "-", "--model", model, input="\n".join(str(p) for p in good[:2]) + "\n")
    assert [ln.split("\t")[0] for ln in s.stdout.splitlines()] == [str(p) for p in good[:2]]


def test_cli_huge_image_is_refused_without_decoding(invoke, trained, tmp_path):
    """A 20,000 x 20,000 PNG header: refused from its size before any pixel is decoded."""
    import struct
    import zlib

    _, out = trained

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    (tmp_path / "huge.png").write_bytes(png)
    r = invoke("caption", tmp_path / "huge.png", "--model", out / "model.safetensors")
    assert r.exit_code == 1 and "20000x20000" in r.stderr and "Traceback" not in r.stderr


def test_cli_usage_errors(invoke, tmp_path):
    r = invoke("caption", "x.jpg", "--beam", "2", "--n-best", "3")
    assert r.exit_code == 2 and "--n-best" in r.stderr
    r = invoke("caption-train", "--data", tmp_path / "none.csv")
    assert r.exit_code != 0 and "does not exist" in r.stderr
    r = invoke("caption", "x.jpg", "--model", tmp_path / "nope.safetensors")
    assert r.exit_code == 2 and "does not exist" in r.stderr  # a missing path is a usage error everywhere


# ---------------------------------------------------------------- encoders
def test_torchvision_encoder_never_downloads_and_takes_local_weights(tmp_path, monkeypatch):
    import torchvision

    from dlkit.core.errors import DlkitError
    from dlkit.tasks.caption.encoder import build_encoder, encoder_spec, feature_map, load_encoder_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
    with pytest.raises(DlkitError, match="never downloads") as e:
        build_encoder(encoder_spec("torchvision:resnet18", True))
    assert "\n" not in str(e.value)
    net = torchvision.models.resnet18()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    spec = encoder_spec("torchvision:resnet18", False)
    enc = build_encoder(spec)
    assert load_encoder_weights(enc, tmp_path / "r18.pth") == len(enc.state_dict())
    assert torch.equal(enc.state_dict()["conv1.weight"], net.conv1.weight)
    assert feature_map(enc.eval(), torch.zeros(1, 3, 64, 64)).shape == (1, 4, spec.channels)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ModelFileError, match="none of its tensors"):
        load_encoder_weights(enc, tmp_path / "bad.pth")


def test_efficientnet_encoder_feature_map():
    from dlkit.tasks.caption.encoder import build_encoder, encoder_spec, feature_map

    spec = encoder_spec("efficientnet-lite0", None)
    assert spec.pretrained and not spec.stored and spec.channels == 1280 and spec.size == 224
    enc = build_encoder(spec).eval()
    with torch.no_grad():
        assert feature_map(enc, torch.zeros(1, 3, 224, 224)).shape == (1, 49, 1280)


def test_text_pretraining_lowers_the_caption_lm_loss(tmp_path):
    import gzip

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.pretrain import pretrain_text
    from dlkit.tasks.caption.train import TrainConfig

    sents = [f"a {c} {s} on the {side}" for c in ("red", "blue", "green") for s in ("circle", "square")
             for side in ("left", "right")] * 8
    f = tmp_path / "extra.en.gz"
    f.write_bytes(gzip.compress("\n".join(sents).encode()))
    vocab = Vocab.build(sents, min_count=1)
    for arch in ARCHS:
        dec = _decoder(arch, vocab=len(vocab), feat=8)
        cfg = TrainConfig(data="-", pretrain_text=str(f), pretrain_epochs=1, pretrain_batch_size=8, lr=1e-2)
        first = pretrain_text(dec, vocab, torch.zeros(1, 8), cfg, make_runtime("cpu", "fp32", 0, distributed=False),
                              Reporter(quiet=True))
        cfg.pretrain_epochs = 3
        later = pretrain_text(dec, vocab, torch.zeros(1, 8), cfg, make_runtime("cpu", "fp32", 0, distributed=False),
                              Reporter(quiet=True))
        assert later["sentences"] == len(sents) and later["loss"] < first["loss"] < 3.5


def test_frozen_encoder_features_are_cached_once_per_dataset(shapes, tmp_path):
    """A frozen pretrained encoder runs once; the next run (attention or nic) reads the cached feature map."""
    import io

    from dlkit.core.report import Reporter
    from dlkit.core.runtime import make_runtime
    from dlkit.tasks.caption.infer import load_captioner
    from dlkit.tasks.caption.train import train

    logs = []
    for k, arch in enumerate(["attention", "nic"]):
        err = io.StringIO()
        cfg = _train_cfg(shapes, tmp_path / f"r{k}", encoder="efficientnet-lite0", image_size=32, epochs=1, arch=arch,
                         feature_cache=str(tmp_path / "cache"))
        train(cfg, make_runtime("cpu", "fp32", 0, distributed=False), Reporter(stderr=err, rich=False))
        logs.append(err.getvalue())
    assert "from the cache" not in logs[0] and "from the cache" in logs[1]
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    cap = load_captioner(str(tmp_path / "r1" / "model.safetensors"))
    assert cap.spec.name == "efficientnet-lite0" and not cap.spec.stored and cap.cfg.arch == "nic"


def test_no_repeat_ngram_blocks_repeated_phrases():
    from dlkit.tasks.caption.vocab import Vocab
    from dlkit.tasks.caption.encoder import EncoderSpec
    from dlkit.tasks.caption.infer import Captioner, caption_features

    torch.manual_seed(0)
    dec = _decoder("attention", seed=5).eval()
    cap = Captioner(dec, None, Vocab(["<pad>", "<unk>", "<s>", "</s>"] + [f"w{i}" for i in range(16)]),
                    EncoderSpec(), dec.cfg)
    feats = torch.randn(6, 9, 16)
    for beam in (1, 3):
        for row in caption_features(cap, feats, beam=beam, no_repeat=2):
            w = row[0].words
            bigrams = list(zip(w, w[1:]))
            assert len(bigrams) == len(set(bigrams)) and "<unk>" not in w
