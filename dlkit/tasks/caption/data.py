"""The training set of caption-train: captions read and checked, split by image, the vocabulary, and the
decoder's inputs per batch (cached features, or pixels when the encoder is trained); and a tiny synthetic
dataset (coloured shapes) for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dlkit.core.errors import DataError
from dlkit.tasks.caption.vocab import Vocab, caption_pairs
from dlkit.tasks.caption.features import cached_features, load_pixels
from dlkit.vision.caption_files import CaptionData, load_captions, split_by_image


@dataclass
class Dataset:
    data: CaptionData
    vocab: Vocab
    train_idx: list[int]
    val_idx: list[int]
    test_idx: list[int]
    train_pairs: list[tuple[int, list[int]]]  # (image index into data, token ids)
    split: dict

    @property
    def n_train(self) -> int:
        return len(self.train_idx)

    def summary(self) -> dict:
        src = Path(self.data.source)
        return {"data": f"{src.parent.name}/{src.name}", "format": self.data.format, "train_images": len(self.train_idx),
                "val_images": len(self.val_idx), "test_images": len(self.test_idx),
                "train_captions": len(self.train_pairs), "heldout_files": {
                    "val": [self.data.images[i].name for i in self.val_idx],
                    "test": [self.data.images[i].name for i in self.test_idx]}}


def prepare(cfg, rt, report, state: dict | None) -> Dataset:
    """Read the captions, drop (or stop at) missing images, split by image, build (or restore) the vocabulary."""
    data = load_captions(cfg.data, cfg.images, cfg.format)
    missing = data.missing()
    if missing:
        shown = ", ".join(str(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        msg = f"{len(missing)} of {len(data)} images named in '{data.source}' do not exist: {shown}"
        if cfg.on_missing == "stop":
            raise DataError(msg + " (stopped: --on-missing stop)")
        report.warn(msg + "; training goes on without them (--on-missing stop to refuse)")
        report.event("missing_images", count=len(missing), paths=[str(p) for p in missing])
        data = data.drop(missing)
    data = _drop_unusable(data, cfg, report)
    split = state["split"] if state else _split(data, cfg)
    train_idx, val_idx, test_idx = split["train"], split["val"], split.get("test", [])
    if not train_idx or not val_idx:
        raise DataError(f"need training and validation images; got {len(train_idx)} and {len(val_idx)}")
    train_caps = [c for i in train_idx for c in data.captions[i]]
    vocab = Vocab(state["vocab"]) if state else Vocab.build(train_caps, cfg.min_count)
    pairs = [(train_idx[i], ids) for i, ids in caption_pairs([data.captions[j] for j in train_idx], vocab, cfg.max_len)]
    if len(pairs) < cfg.batch_size * rt.world_size:
        report.warn(f"only {len(pairs)} training captions for a global batch of {cfg.batch_size * rt.world_size}")
    return Dataset(data, vocab, train_idx, val_idx, test_idx, pairs, split)


def _drop_unusable(data: CaptionData, cfg, report) -> CaptionData:
    """Images that are not images, or too large to decode (a bomb), checked from their headers alone: each is
    named in a warning and left out, as the batch policy says (or the run stops with --on-missing stop)."""
    from dlkit.vision.image import ImageError, check_image

    bad = []
    for p in data.images:
        try:
            check_image(p)
        except ImageError as e:
            bad.append((p, str(e)))
    if not bad:
        return data
    for p, why in bad[:5]:
        report.warn(f"skipped: {why}")
    msg = f"{len(bad)} of {len(data)} images in '{data.source}' cannot be used"
    if cfg.on_missing == "stop":
        raise DataError(f"{msg}: {bad[0][1]} (stopped: --on-missing stop)")
    report.warn(f"{msg}{' (5 shown)' if len(bad) > 5 else ''}; training goes on without them")
    report.event("unusable_images", count=len(bad), paths=[str(p) for p, _ in bad])
    return data.drop([p for p, _ in bad])


def _split(data: CaptionData, cfg) -> dict:
    """The file's own splits (Flickr8k split files, Karpathy JSON) when it has train and val, else a seeded
    split by image: validation and test images never share a photo with training."""
    if "train" in data.splits and "val" in data.splits and not cfg.test_images:
        return {k: list(v) for k, v in data.splits.items() if k in ("train", "val", "test")}
    val = int(cfg.val_images) if cfg.val_images >= 1 else float(cfg.val_images)
    test = int(cfg.test_images) if cfg.test_images >= 1 else float(cfg.test_images)
    return split_by_image(len(data), val, test, cfg.seed)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled caption order of an epoch, a pure function of (seed, epoch): resume needs no data position."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class Inputs:
    """Decoder inputs per image index: cached features (frozen encoder) or normalised pixels (trained encoder)."""

    def __init__(self, ds: Dataset, spec, encoder, trained: bool, cfg, rt, report):
        self.ds, self.spec, self.encoder, self.trained, self.rt = ds, spec, encoder, trained, rt
        self.pooled = cfg.arch == "nic"
        self.encoder.to(rt.device)
        self.feats = None
        if not trained:
            self.feats = self._cache(cfg, report)
        else:
            self.pixels = _PixelCache(ds.data.images, spec)

    def _cache(self, cfg, report) -> torch.Tensor:
        from dlkit.core.zoo import home_dir

        cache_dir = None if cfg.feature_cache == "" else Path(cfg.feature_cache or home_dir() / "cache" / "caption-features")
        paths = list(self.ds.data.images)
        for attempt in ((0,) if not self.rt.distributed else (0, 1)):  # rank 0 writes the cache, then the others read it
            if self.rt.is_main == (attempt == 0):
                feats = cached_features(self.encoder, paths, self.spec, self.rt, report, cache_dir, pooled=self.pooled)
            self.rt.barrier()
        return feats

    def batch(self, idx: list[int]) -> torch.Tensor:
        """What the trained network reads for these images (features, or pixels when fine-tuning)."""
        return self.pixels.get(idx) if self.trained else self.feats[idx]

    @torch.no_grad()
    def features(self, idx: list[int]) -> torch.Tensor:
        """Encoder features for decoding (runs the encoder when it is being trained)."""
        if not self.trained:
            return self.feats[idx].float()
        from dlkit.tasks.caption.encoder import feature_map

        was = self.encoder.training
        self.encoder.eval()
        f = feature_map(self.encoder, self.pixels.get(idx).to(self.rt.device))
        self.encoder.train(was)
        return f.mean(1) if self.pooled else f

    def null_input(self) -> torch.Tensor:
        """The "no image" input used to pretrain the decoder on text alone: zero features."""
        shape = (self.spec.channels,) if self.pooled else (1, self.spec.channels)
        return torch.zeros(shape)


class _PixelCache:
    """Normalised pixels, decoded once and kept in memory (fine-tuning on datasets that fit)."""

    def __init__(self, paths: list[Path], spec):
        self.paths, self.spec, self.cache = paths, spec, {}

    def get(self, idx: list[int]) -> torch.Tensor:
        for i in idx:
            if i not in self.cache:
                self.cache[i] = load_pixels(self.paths[i], self.spec).half()  # half the memory
        return torch.stack([self.cache[i] for i in idx]).float()


# ---------------------------------------------------------------- synthetic data for tests
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 30)}
SHAPES = ("circle", "square", "triangle")
SIDES = ("left", "right")


def shape_image(colour: str, shape: str, side: str, size: int = 32, seed: int = 0):
    """A PIL image: one coloured shape on a grey background, on the left or the right half."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), (128 + rng.randint(-20, 20),) * 3)
    d = ImageDraw.Draw(img)
    r = size // 5 + rng.randint(-1, 1)
    cx = (size // 4 if side == "left" else 3 * size // 4) + rng.randint(-1, 1)
    cy = size // 2 + rng.randint(-3, 3)
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def shape_captions(colour: str, shape: str, side: str) -> list[str]:
    return [f"a {colour} {shape} on the {side} .", f"a {colour} {shape} on the {side} side .",
            f"there is a {colour} {shape} on the {side} ."]


def make_shapes_dataset(folder, n: int = 48, size: int = 32, seed: int = 0) -> "object":
    """Write ``n`` shape images and a ``captions.txt`` (CSV, the shared data's format) into ``folder``."""
    import csv
    import itertools
    import random
    from pathlib import Path

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    combos = list(itertools.product(COLOURS, SHAPES, SIDES))
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour, shape, side = combos[i % len(combos)] if i < len(combos) else rng.choice(combos)
        name = f"img{i:03d}.png"
        shape_image(colour, shape, side, size, seed * 1000 + i).save(folder / "images" / name)
        rows += [(name, c) for c in shape_captions(colour, shape, side)]
    with open(folder / "captions.txt", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return folder / "captions.txt"
