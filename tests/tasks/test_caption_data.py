"""Captioning data and preprocessing: split lists beside a CSV, squash / crop / pad, the length-sorted
teacher forcing, label smoothing."""

import pytest
import torch
from PIL import Image

from dlkit.core.errors import ModelFileError
from dlkit.tasks.caption.encoder import EncoderSpec, check_spec
from dlkit.tasks.caption.features import preprocess
from dlkit.tasks.caption.model import build_model, caption_loss, preset
from dlkit.tasks.caption.vocab import pad_batch
from dlkit.text.tokens import PAD

MEAN, STD = (0.5,) * 3, (0.25,) * 3


def test_csv_with_split_lists_beside_it(tmp_path):
    from dlkit.vision.caption_files import load_captions

    (tmp_path / "images").mkdir()
    rows = ["image,caption"]
    for i in range(5):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"p{i}.jpg")
        rows += [f"p{i}.jpg,a photo number {i} .", f"p{i}.jpg,photo {i}"]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    plain = load_captions(tmp_path / "captions.csv")
    assert plain.splits == {} and len(plain) == 5  # no lists: caption-train splits by image itself
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("p0.jpg\np2.jpg\np3.jpg\nnot_in_file.jpg\n")
    (tmp_path / "splits" / "dev.txt").write_text("p4.jpg\n\n")
    d = load_captions(tmp_path / "captions.csv")
    names = {k: [d.images[i].name for i in v] for k, v in d.splits.items()}
    assert names == {"train": ["p0.jpg", "p2.jpg", "p3.jpg"], "val": ["p4.jpg"]}
    assert d.captions[4] == ["a photo number 4 .", "photo 4"]
    # a dropped image leaves both lists re-indexed
    kept = d.drop([d.images[0]])
    assert [kept.images[i].name for i in kept.splits["train"]] == ["p2.jpg", "p3.jpg"]


def _bands(w=96, h=32):
    """Red | green | blue vertical bands (a wide photo)."""
    img = Image.new("RGB", (w, h))
    for k, colour in enumerate(((255, 0, 0), (0, 255, 0), (0, 0, 255))):
        img.paste(Image.new("RGB", (w // 3, h), colour), (k * w // 3, 0))
    return img


def _rgb(x):
    return x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)  # back to [0, 1]


def test_squash_crop_and_pad_of_a_wide_photo():
    img = _bands()
    squash, crop, pad = (_rgb(preprocess(img, 24, MEAN, STD, r)) for r in ("squash", "crop", "pad"))
    assert squash.shape == crop.shape == pad.shape == (3, 24, 24)
    # squash keeps all three bands at full height
    assert squash[0, :, 2].min() > 0.9 and squash[1, :, 12].min() > 0.9 and squash[2, :, 21].min() > 0.9
    # crop keeps the centre: only the green band
    assert crop[1].min() > 0.85 and crop[0].max() < 0.15 and crop[2].max() < 0.15
    # pad: the three bands in the middle 8 rows, the normalisation mean (zero input) above and below
    assert pad[0, 12, 2] > 0.9 and pad[1, 12, 12] > 0.9 and pad[2, 12, 21] > 0.9
    assert torch.allclose(pad[:, :7], torch.full_like(pad[:, :7], 0.5), atol=0.01)
    assert torch.allclose(pad[:, -7:], torch.full_like(pad[:, -7:], 0.5), atol=0.01)
    # a square photo gives the same input whichever way
    sq = _bands(48, 48)
    a, b, c = (preprocess(sq, 24, MEAN, STD, r) for r in ("squash", "crop", "pad"))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_resize_entry_of_a_model_file_is_checked():
    assert EncoderSpec.from_meta({k: v for k, v in EncoderSpec().to_meta().items() if k != "resize"}).resize == "squash"
    check_spec(EncoderSpec(resize="crop"))
    with pytest.raises(ModelFileError, match="resize 'stretch' is not one of squash, crop, pad"):
        check_spec(EncoderSpec(resize="stretch"))


def test_length_sorted_teacher_forcing_equals_step_by_step():
    """Rows of different lengths in any order: the same logits as the step interface where the input is a
    word, zeros after each caption's end, and gradients only from the scored steps."""
    torch.manual_seed(0)
    m = build_model(preset("tiny", arch="attention", vocab_size=30, feat_dim=16)).eval()
    x, y = pad_batch([[5, 6], [7, 8, 9, 10, 11], [12], [13, 14, 15]])
    feats = torch.randn(4, 9, 16, requires_grad=True)
    logits, alphas = m(feats, x)
    enc, ref = m.prepare(feats), []
    state = m.init_state(enc)
    for t in range(x.size(1)):
        lg, state, _ = m.step(enc, state, x[:, t])
        ref.append(lg)
    ref = torch.stack(ref, 1)
    inside = x != PAD
    assert torch.allclose(logits[inside], ref[inside], atol=1e-5)
    assert logits[~inside].abs().max() == 0 and alphas[~inside].abs().max() == 0
    assert torch.allclose(alphas[inside].sum(-1), torch.ones(int(inside.sum())), atol=1e-5)
    # the third caption (one word) does not depend on what other rows do after its end
    logits[2, :2].sum().backward()
    assert feats.grad[2].abs().sum() > 0 and feats.grad[[0, 1, 3]].abs().sum() == 0


def test_label_smoothing_spreads_the_target():
    logits = torch.full((1, 3, 10), -10.0)
    y = torch.tensor([[4, 5, PAD]])
    logits[0, 0, 4] = logits[0, 1, 5] = 10.0  # confident and right
    plain, _ = caption_loss(logits, y, None)
    smooth, _ = caption_loss(logits, y, None, label_smoothing=0.1)
    assert plain < 1e-6 and smooth > 1.0  # a confident right answer is penalised once smoothed
    logits[0, :2] = 0.0  # uniform: smoothing changes nothing
    assert caption_loss(logits, y, None, label_smoothing=0.1)[0] == pytest.approx(caption_loss(logits, y, None)[0])
