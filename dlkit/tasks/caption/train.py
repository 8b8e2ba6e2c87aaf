"""caption-train: image-caption epochs with teacher forcing on cached CNN features (or a fine-tuned CNN),
validation each epoch (corpus BLEU-1..4 against all references, CIDEr-D), early stopping on CIDEr-D, the
best model kept, resume, mixed precision, DDP, and optional text pretraining of the decoder.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from dlkit.core.modelfile import as_stored, load_model_file, save_model
from dlkit.core.state import save_state, state_path
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import check_finite, optimizer_step, warmup_cosine
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, num_params, rng_state, set_rng_state, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.caption import data as cdata
from dlkit.tasks.caption.vocab import normalize, pad_batch
from dlkit.tasks.caption.encoder import build_encoder, encoder_spec, feature_map, load_encoder_weights
from dlkit.tasks.caption.infer import TASK, Captioner, caption_features, model_meta
from dlkit.tasks.caption.metrics import caption_scores
from dlkit.tasks.caption.pretrain import pretrain_text
from dlkit.tasks.caption.model import build_model, caption_loss, preset

MODEL_FILE = "model.safetensors"


@dataclass
class TrainConfig:
    data: str
    images: str | None = None
    format: str = "auto"
    out: str = "runs/caption"
    arch: str = "attention"
    preset: str = "small"
    embed: int | None = None
    hidden: int | None = None
    dropout: float | None = None
    encoder: str = "efficientnet-lite0"
    pretrained: bool | None = None  # None: the encoder's default (efficientnet-lite0: yes)
    encoder_weights: str | None = None
    finetune_encoder: bool = False
    encoder_lr: float = 1e-4
    image_size: int | None = None
    resize: str = "squash"  # squash | crop | pad: how photos of other shapes become square (features.preprocess)
    min_count: int = 5
    max_len: int = 25
    val_images: float = 0.1  # count (>= 1) or fraction of the images, when the file has no splits
    test_images: float = 0  # also held out, scored once with the best model at the end
    epochs: int = 30
    batch_size: int = 32
    lr: float = 4e-4
    min_lr: float = 4e-5
    clip: float = 5.0
    alpha_c: float = 1.0  # doubly stochastic regularisation (attention)
    label_smoothing: float = 0.0
    patience: int = 6  # epochs without a better validation CIDEr-D before stopping
    val_beam: int = 3
    pretrain_text: str | None = None
    pretrain_epochs: int = 2
    pretrain_batch_size: int = 128
    on_missing: str = "skip"  # skip | stop: images named by the caption file that do not exist
    feature_cache: str | None = None  # folder; "" turns the cache off
    max_time: float | None = None  # seconds
    seed: int = 0
    save_dtype: str = "fp32"
    resume: bool = False


@dataclass
class TrainResult:
    model_path: str
    epochs: int
    best: dict
    test: dict | None
    seconds: float
    history: list = field(default_factory=list)
    stopped: str = ""


class _Net(nn.Module):
    """What the optimizer trains: the decoder, and the encoder when it is fine-tuned (one DDP module)."""

    def __init__(self, decoder: nn.Module, encoder: nn.Module | None):
        super().__init__()
        self.decoder, self.encoder = decoder, encoder

    def forward(self, inputs: torch.Tensor, x: torch.Tensor):
        feats = feature_map(self.encoder, inputs) if self.encoder is not None else inputs.float()
        return self.decoder(feats, x)


MAX_EMBED = MAX_HIDDEN = 4096


def check_config(cfg: TrainConfig) -> None:
    """Upper bounds of the size options, with the memory they imply (one UsageError line each)."""
    from dlkit.core.limits import at_most
    from dlkit.tasks.caption.encoder import MAX_IMAGE_SIZE
    from dlkit.tasks.caption.infer import MAX_LEN

    at_most("--image-size", cfg.image_size, MAX_IMAGE_SIZE, "the encoder's activations grow with the square of "
            "the side (1024 px: about 20x those at the usual 224)")
    at_most("--hidden", cfg.hidden, MAX_HIDDEN, "an LSTM of H units holds 4H(H+E) weights, 4x that with gradients "
            "and Adam's state (about 1.2 GB at 4096)")
    at_most("--embed", cfg.embed, MAX_EMBED, "the embedding and the LSTM's input weights grow with it "
            "(vocabulary x E, 4H x E)")
    at_most("--max-len", cfg.max_len, MAX_LEN, "decoding takes one step per word and validation decodes every "
            "image with a beam; captions are rarely over 50 words")


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    check_config(cfg)
    stop = stop or StopSignal()
    out = Path(cfg.out)
    model_path, state_file = out / MODEL_FILE, state_path(out / MODEL_FILE)
    state = resume_state(state_file, TASK, required=STATE_KEYS, config=asdict(cfg), shape_keys=_SHAPE_KEYS) \
        if cfg.resume else None
    ds = cdata.prepare(cfg, rt, report, state)
    spec, encoder, trains = _encoder(cfg, report)
    mcfg = preset(cfg.preset, arch=cfg.arch, vocab_size=len(ds.vocab), feat_dim=spec.channels, embed=cfg.embed,
                  hidden=cfg.hidden, dropout=cfg.dropout, max_len=cfg.max_len)
    decoder = build_model(mcfg)
    trained_encoder = encoder if trains else None
    inputs = cdata.Inputs(ds, spec, encoder, trained_encoder is not None, cfg, rt, report)
    net = _Net(decoder, trained_encoder)
    if state is None and cfg.pretrain_text:
        pretrain_text(decoder, ds.vocab, inputs.null_input(), cfg, rt, report)
    optimizer = _optimizer(cfg, decoder, trained_encoder, from_scratch=not spec.pretrained and not cfg.encoder_weights)
    if state is not None:
        net.load_state_dict(state["model"])
    model = rt.wrap(net)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], rt.rank)
    prog = state["progress"] if state else {"epoch": 0, "batch": 0, "best": None, "bad": 0, "history": [],
                                            "elapsed": 0.0, "step": 0}
    report.start("caption-train", f"{cfg.arch} decoder ({num_params(decoder) / 1e6:.2f}M parameters), encoder "
                 f"{spec.name}{' (fine-tuned)' if trained_encoder is not None else ' (frozen)'}, vocab {len(ds.vocab)}, "
                 f"{len(ds.train_pairs)} training captions of {ds.n_train} images, {len(ds.val_idx)} validation images",
                 rt, prog["step"], task="caption", arch=cfg.arch, encoder=spec.name, vocab=len(ds.vocab),
                 train_images=ds.n_train, val_images=len(ds.val_idx), epoch=prog["epoch"])
    loop = _Loop(cfg, rt, report, stop, model, optimizer, inputs, ds, spec, mcfg, model_path, state_file, prog)
    return loop.run()


# A resumed run keeps the settings that decide tensor shapes, the vocabulary and the split.
_SHAPE_KEYS = ("arch", "preset", "embed", "hidden", "encoder", "image_size", "min_count", "max_len",
               "finetune_encoder", "data", "val_images", "test_images", "seed")
STATE_KEYS = ("model", "optimizer", "progress", "rng", "vocab", "split", "config")


def _encoder(cfg: TrainConfig, report: Reporter):
    """(spec, encoder, whether it is trained). Its weights go into the model file unless it is the packaged
    EfficientNet-Lite0, frozen."""
    spec = encoder_spec(cfg.encoder, cfg.pretrained, cfg.image_size)
    spec.resize = cfg.resize
    scratch = not spec.pretrained and not cfg.encoder_weights
    trains = cfg.finetune_encoder or scratch
    spec.stored = trains or spec.name != "efficientnet-lite0" or bool(cfg.encoder_weights)
    encoder = build_encoder(spec)
    if cfg.encoder_weights:
        n = load_encoder_weights(encoder, cfg.encoder_weights)
        report.info(f"caption-train: {n} encoder tensors from {cfg.encoder_weights}")
    if scratch and not cfg.finetune_encoder:
        report.info(f"caption-train: encoder {spec.name} starts from scratch, so it is trained with the decoder")
    for p in encoder.parameters():
        p.requires_grad_(trains)
    return spec, encoder, trains


def _optimizer(cfg: TrainConfig, decoder: nn.Module, encoder: nn.Module | None, from_scratch: bool):
    """Adam; a fine-tuned pretrained encoder gets the smaller --encoder-lr, one from scratch the decoder's."""
    groups = [{"params": list(decoder.parameters()), "lr": cfg.lr, "base_lr": cfg.lr}]
    if encoder is not None:
        lr = cfg.lr if from_scratch else cfg.encoder_lr
        groups.append({"params": list(encoder.parameters()), "lr": lr, "base_lr": lr})
    return torch.optim.Adam(groups, lr=cfg.lr)


class _Loop:
    """The epoch loop; its state (``prog``) is plain values so a resume continues at the same batch."""

    def __init__(self, cfg, rt, report, stop, model, optimizer, inputs, ds, spec, mcfg, model_path, state_file, prog):
        self.cfg, self.rt, self.report, self.stop = cfg, rt, report, stop
        self.model, self.optimizer, self.inputs, self.ds = model, optimizer, inputs, ds
        self.spec, self.mcfg, self.model_path, self.state_file, self.prog = spec, mcfg, model_path, state_file, prog
        self.t0 = self.started = time.monotonic()
        self.n_batches = 1  # batches per epoch, set by epoch()
        self.best: tuple[dict, dict] | None = None  # this run's best model (CPU tensors) and metadata

    def elapsed(self) -> float:
        """Training seconds over all runs of this --out (what the model file records)."""
        return self.prog["elapsed"] + time.monotonic() - self.t0

    def stop_reason(self) -> str:
        """"interrupted", "max-time" (this run's time: a resumed run gets the whole budget again) or "",
        the same on every rank."""
        return stop_reason(self.stop, self.rt, t0=self.started, max_time_s=self.cfg.max_time,
                           step=self.prog["step"]) or ""

    def run(self) -> TrainResult:
        cfg, prog = self.cfg, self.prog
        stopped = ""
        while prog["epoch"] < cfg.epochs and not stopped:
            stopped = self.epoch()
            if stopped != "interrupted":  # validated after each epoch, and where --max-time stopped one
                stopped = self.validate() or stopped
            if stopped == "interrupted":
                save_and_interrupt(self.rt, self.save_state, f"in epoch {prog['epoch'] + 1}", self.state_file)
        if stopped == "max-time":
            self.report.info(f"--max-time reached in epoch {prog['epoch'] + (1 if prog['batch'] else 0)}")
        self.save_state()
        test = self.test() if self.ds.test_idx else None
        best = prog["best"] or {}
        return TrainResult(str(self.model_path), prog["epoch"], best, test, self.elapsed(), prog["history"], stopped)

    def epoch(self) -> str:
        cfg, rt, prog = self.cfg, self.rt, self.prog
        order = cdata.epoch_order(len(self.ds.train_pairs), cfg.seed, prog["epoch"])
        B = cfg.batch_size * rt.world_size
        n_batches = self.n_batches = max(1, len(order) // B)
        self.model.train()
        update_at = prog["batch"]
        with self.report.progress(n_batches, f"epoch {prog['epoch'] + 1}", start=prog["batch"]) as update:
            while prog["batch"] < n_batches:
                rows = order[prog["batch"] * B : (prog["batch"] + 1) * B][rt.rank :: rt.world_size]
                lr_scale = warmup_cosine(prog["epoch"] * n_batches + prog["batch"], 1.0, 0,
                                         cfg.epochs * n_batches, cfg.min_lr / cfg.lr)
                for g in self.optimizer.param_groups:
                    g["lr"] = g["base_lr"] * lr_scale
                loss, ce = self.step(rows)  # detached tensors: synchronised only when logged
                prog["batch"] += 1
                prog["step"] += 1
                if prog["step"] % 20 == 0 or prog["batch"] == n_batches:
                    loss, ce = float(loss), float(ce)
                    check_finite(loss, prog["step"], keep=str(self.model_path) if self.model_path.exists() else None)
                    update(prog["batch"] - update_at, loss=ce)
                    update_at = prog["batch"]
                    self.report.event("step", epoch=prog["epoch"] + 1, step=prog["step"], loss=loss, ce=ce,
                                      lr=self.optimizer.param_groups[0]["lr"])
                stopped = self.stop_reason()
                if stopped:
                    return stopped
        prog["epoch"] += 1
        prog["batch"] = 0
        return ""

    def step(self, rows: list[int]) -> tuple[float, float]:
        rt = self.rt
        img_idx = [self.ds.train_pairs[r][0] for r in rows]
        x, y = pad_batch([self.ds.train_pairs[r][1] for r in rows])
        inputs = self.inputs.batch(img_idx).to(rt.device, non_blocking=True)
        x, y = x.to(rt.device), y.to(rt.device)
        with rt.autocast():
            logits, alphas = self.model(inputs, x)
        loss, ce = caption_loss(logits, y, alphas, self.cfg.alpha_c, self.cfg.label_smoothing)
        optimizer_step(loss, self.optimizer, rt.scaler, clip=self.cfg.clip)
        return loss.detach(), ce.detach()

    def validate(self) -> str:
        """Score the validation images; keep the model when CIDEr-D improves; early-stop on patience."""
        cfg, prog = self.cfg, self.prog
        scores = self.score(self.ds.val_idx)
        # a run stopped by --max-time in the middle of an epoch is validated there (epoch 7.25)
        epoch = prog["epoch"] + round(prog["batch"] / self.n_batches, 2)
        scores = {"epoch": epoch if prog["batch"] else prog["epoch"], **scores}
        prog["history"].append(scores)
        improved = prog["best"] is None or scores["cider_d"] > prog["best"]["cider_d"]
        if improved:
            prog["best"], prog["bad"] = scores, 0
            self.save_model(scores)
        else:
            prog["bad"] += 1
        self.report.metrics("val", **scores, best_cider_d=prog["best"]["cider_d"])
        self.save_state()
        if prog["bad"] >= cfg.patience:
            self.report.info(f"early stop: no better validation CIDEr-D for {cfg.patience} epochs")
            return "early-stop"
        return self.stop_reason()

    def score(self, idx: list[int], beam: int | None = None, samples: int = 2) -> dict:
        """BLEU-1..4 and CIDEr-D of beam-search captions of images ``idx`` against all their references."""
        cap = self.captioner()
        hyps = []
        for i in range(0, len(idx), 64):
            feats = self.inputs.features(idx[i : i + 64]).to(self.rt.device)
            hyps += [h[0].caption for h in caption_features(cap, feats, beam or self.cfg.val_beam)]
        refs = [[normalize(c) for c in self.ds.data.captions[j]] for j in idx]
        for h, j in list(zip(hyps, idx))[:samples]:
            self.report.info(f"  {self.ds.data.images[j].name}: {h}")
        return caption_scores(hyps, refs)

    def captioner(self) -> Captioner:
        net = unwrap(self.model)
        net.eval()
        return Captioner(net.decoder, self.inputs.encoder, self.ds.vocab, self.spec, self.mcfg)

    def test(self) -> dict:
        """The best model's scores on the test images (never used for model selection), written into its file.

        The best weights come from memory (:meth:`save_model` keeps them), as the file holds them (rounded to
        fp16 with ``--save-dtype fp16``); a resumed run that found no better model takes the earlier run's."""
        if self.best is None:
            self.best = load_model_file(self.model_path, TASK)
        sd, meta = self.best
        net = unwrap(self.model)
        net.decoder.load_state_dict({k[len("decoder."):]: self._as_saved(v) for k, v in sd.items()
                                     if k.startswith("decoder.")})
        if net.encoder is not None:  # a fine-tuned encoder: the best one, too
            net.encoder.load_state_dict({k[len("encoder."):]: self._as_saved(v) for k, v in sd.items()
                                         if k.startswith("encoder.")})
        scores = self.score(self.ds.test_idx, samples=0)
        self.report.metrics("test", images=len(self.ds.test_idx), **scores)
        if self.rt.is_main:
            meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
            meta["metrics"] = {**meta["metrics"], "test": {"images": len(self.ds.test_idx), **scores}}
            meta["headline"] = (f"test BLEU-4 {scores['bleu4']:.3f}, CIDEr-D {scores['cider_d']:.3f} "
                                f"({len(self.ds.test_idx)} held-out images)")
            save_model(self.model_path, sd, meta, dtype=self.cfg.save_dtype)
        return scores

    def _as_saved(self, t: torch.Tensor) -> torch.Tensor:
        return as_stored(t, self.cfg.save_dtype)

    def save_model(self, scores: dict) -> None:
        """Write the new best model (rank 0) and keep a CPU copy of it and its metadata for :meth:`test`."""
        net = unwrap(self.model)
        sd = {f"decoder.{k}": v.detach().to("cpu", copy=True) for k, v in net.decoder.state_dict().items()}
        if self.spec.stored:  # trained, or not from a package: inference needs these weights
            sd.update({f"encoder.{k}": v.detach().to("cpu", copy=True)
                       for k, v in self.inputs.encoder.state_dict().items()})
        meta = model_meta(self.mcfg, self.spec, self.ds.vocab, scores, asdict(self.cfg), self.ds.summary(),
                          scores["epoch"], self.elapsed())  # the scored epoch: 7.76 when --max-time stopped one
        self.best = (sd, meta)
        if self.rt.is_main:
            save_model(self.model_path, sd, meta, dtype=self.cfg.save_dtype)

    def save_state(self) -> None:
        """Written by rank 0; called on every rank (the RNG states are gathered)."""
        rng = rng_state(self.rt)
        if not self.rt.is_main:
            return
        self.prog["elapsed"] = self.elapsed()
        self.t0 = time.monotonic()
        save_state(self.state_file, {"model": unwrap(self.model).state_dict(),
                                     "optimizer": self.optimizer.state_dict(), "progress": self.prog,
                                     "rng": rng, "vocab": self.ds.vocab.words, "split": self.ds.split,
                                     "config": asdict(self.cfg)}, task=TASK)


