"""Training a translation model: label smoothing, AdamW + warmup, token batches, BLEU-based model
selection with early stopping, averaging of the last N checkpoints, exact resume, DDP."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dlkit.core.modelfile import load_model_file, save_model
from dlkit.core.state import save_state, state_path
from dlkit.core.errors import DataError, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import adamw, check_finite, inverse_sqrt, optimizer_step, set_lr
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, num_params, rng_state, set_rng_state, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.translate import corpus as C
from dlkit.tasks.translate import data as D
from dlkit.tasks.translate.model import PRESETS, Seq2SeqConfig, build_model, preset
from dlkit.text.bleu import translation_bleu
from dlkit.text.search import greedy, max_lengths

TASK = "translate"
MODEL_FILE = "model.safetensors"


@dataclass
class TrainConfig:
    src: str | None = None  # --src/--tgt files, or
    tgt: str | None = None
    tsv: str | None = None  # a TSV of pairs, and/or
    data: list[str] = field(default_factory=list)  # sources 'PATH[:WEIGHT]': TSV files, Multi30k-style folders
    pair: str | None = None  # e.g. en-fr: languages for Moses; picks files in a folder; de-en swaps TSV columns
    valid_src: str | None = None
    valid_tgt: str | None = None
    valid_tsv: str | None = None
    valid_sentences: int = 2000  # English sentences held out (by sentence) when no validation files are given
    valid_fraction: float = 0.05  # ... but at most this fraction of the distinct English sentences
    valid_max: int = 0  # cap on validation sentences decoded for BLEU (0: all)
    out: str = "runs/translate"
    arch: str = "transformer"
    preset: str = "small"
    d_model: int | None = None
    layers: int | None = None
    dropout: float | None = None
    attention: str = "luong"
    reverse_source: bool = True
    vocab_size: int = 8000
    subword: str = "bpe"  # bpe | unigram
    joint_vocab: bool = True
    max_tokens: int = 4096  # per batch per process (padded source + target tokens)
    epochs: int = 20
    lr: float = 1e-3
    warmup: int = 1000
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip: float = 1.0
    eval_every: int = 0  # steps between evaluations (0: once per epoch)
    patience: int = 5  # evaluations without a better BLEU before stopping (0: never)
    average_last: int = 1  # average the last N evaluated checkpoints at the end
    max_time: float | None = None  # seconds of this run (a resumed run gets the full budget again)
    seed: int = 1
    save_dtype: str = "fp32"
    resume: bool = False
    overwrite: bool = False
    log_every: int = 20
    init: str | None = None  # fine-tune: weights, shape and subwords from this translate model (name or path)  # steps between loss reports (the only host syncs of the loss)

    def __post_init__(self) -> None:
        if isinstance(self.data, str):  # one folder or file, as library callers gave it before
            self.data = [self.data]


# settings that decide tensor shapes (or the text pipeline): --resume with other values is refused
SHAPE_KEYS = ("arch", "preset", "d_model", "layers", "attention", "vocab_size", "subword", "joint_vocab", "init")


@dataclass
class TrainResult:
    model_path: str
    steps: int
    epochs_done: int
    best_bleu: float
    seconds: float
    tokens_per_s: float
    params: int
    history: list = field(default_factory=list)


# ------------------------------------------------------------------ data
def model_config(cfg: TrainConfig, pipe: D.TextPipeline) -> Seq2SeqConfig:
    if cfg.arch not in PRESETS:
        raise UsageError(f"--arch {cfg.arch}: expected one of {', '.join(PRESETS)}")
    if cfg.preset not in PRESETS[cfg.arch]:
        raise UsageError(f"--preset {cfg.preset}: expected one of {', '.join(PRESETS[cfg.arch])}")
    layers = {"enc_layers": cfg.layers, "dec_layers": cfg.layers} if cfg.layers else {}
    return preset(cfg.arch, cfg.preset, src_vocab=pipe.src_sp.vocab_size, tgt_vocab=pipe.tgt_sp.vocab_size,
                  d_model=cfg.d_model, dropout=cfg.dropout, share_embeddings=pipe.joint, attention=cfg.attention,
                  reverse_source=cfg.reverse_source, **layers)


def loss_fn(model, batch, label_smoothing: float) -> torch.Tensor:
    src, tin, tout = batch
    logits = model(src, tin)  # (B, T, V)
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tout.reshape(-1), ignore_index=D.PAD,
                           label_smoothing=label_smoothing)


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model, pipe: D.TextPipeline, valid: D.Encoded, refs: list[str], device, batch_size: int = 100) -> dict:
    """Greedy-decode the validation sources and score them: BLEU (sacreBLEU, lc-tok) and token loss."""
    model.eval()
    order = sorted(range(len(valid.src)), key=lambda i: len(valid.src[i]))
    hyps: list[str] = [""] * len(order)
    total, count = 0.0, 0
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        src, tin, tout = D.collate(valid, idx, device)
        logits = model(src, tin)
        total += float(F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tout.reshape(-1),
                                       ignore_index=D.PAD, reduction="sum"))
        count += int((tout != D.PAD).sum())
        enc = model.encode(src)
        out = greedy(model, enc, max_lengths((src != D.PAD).sum(1), 1.5, 10, model.cfg.max_len))
        for i, h in zip(idx, out):
            hyps[i] = pipe.decode_tgt(h.tokens)
    model.train()
    b = translation_bleu(hyps, refs, pipe.tgt_lang)
    return {"bleu": b.sacrebleu, "bleu_lc_tok": b.lc_tok, "val_loss": total / max(count, 1), "sample": hyps[0]}


def average_files(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Parameter average of checkpoints (Vaswani et al. 2017 average the last 5 or 20)."""
    avg = None
    for p in paths:
        sd, _ = load_model_file(p)
        if avg is None:
            avg = {k: v.double().clone() for k, v in sd.items()}
        else:
            for k in avg:
                avg[k] += sd[k].double()
    return {k: (v / len(paths)).float() for k, v in avg.items()}


# ------------------------------------------------------------------ training
def load_init(cfg: TrainConfig, sl: str, tl: str):
    """The --init model (fine-tuning): its network and text pipeline, checked against this run's languages."""
    from dlkit.tasks.translate.infer import load_translator

    tr = load_translator(cfg.init)
    if (tr.pipe.src_lang, tr.pipe.tgt_lang) != (sl, tl):
        raise UsageError(f"--init {cfg.init} translates {tr.pipe.src_lang}-{tr.pipe.tgt_lang}; this run is {sl}-{tl}")
    return tr


def prepare(cfg: TrainConfig, state: dict | None, report: Reporter):
    m, sl, tl = C.load_text(cfg, report.warn)
    init = load_init(cfg, sl, tl) if cfg.init else None
    src, tgt, vs, vt = m.src, m.tgt, m.valid_src, m.valid_tgt
    report.info(f"translate-train: {len(src):,} training pairs, {len(vs):,} validation pairs ({sl} -> {tl})"
                + ("; " + ", ".join(f"{x['name']} x{x['weight']:g}: {x['train']:,}" for x in m.sources)
                   if len(m.sources) > 1 else ""))
    s_tok, t_tok = D.moses_all(src, tgt, sl, tl)
    if state is not None:
        pipe = D.TextPipeline.from_meta(state["text"])
    elif init is not None:
        pipe = init.pipe
    else:
        pipe = D.TextPipeline.learn(s_tok, t_tok, sl, tl, cfg.vocab_size, cfg.subword, cfg.joint_vocab)
    mcfg = init.model.cfg if init is not None else model_config(cfg, pipe)
    train_set = D.encode_corpus(pipe, s_tok, t_tok, mcfg.max_len)
    if not train_set.src:
        raise DataError("no usable training pairs (all empty after tokenisation)")
    vs_tok, vt_tok = D.moses_all(vs, vt, sl, tl)
    valid = D.encode_corpus(pipe, vs_tok, vt_tok, mcfg.max_len)
    keep = [i for i, (s, t) in enumerate(zip(vs_tok, vt_tok)) if s and t]
    refs = [vt[i] for i in keep]
    return pipe, mcfg, train_set, valid, refs, (init.model.train() if init is not None else None)


@dataclass
class _Run:
    """What one training run holds, so the loop in :func:`train` reads top to bottom."""

    cfg: TrainConfig
    rt: Runtime
    report: Reporter
    model: torch.nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    pipe: D.TextPipeline
    mcfg: Seq2SeqConfig
    valid: D.Encoded
    refs: list
    s: dict  # progress: step, epoch, batch, best, bad, elapsed, history, snapshots, tokens
    t0: float = field(default_factory=time.monotonic)
    batches: int = 0  # this rank's batches in the current epoch

    @property
    def model_path(self) -> Path:
        return Path(self.cfg.out) / MODEL_FILE

    def elapsed(self) -> float:
        return self.s["elapsed"] + time.monotonic() - self.t0

    def save_state(self) -> None:
        """Written by rank 0; called on every rank (the RNG states are gathered)."""
        rng = rng_state(self.rt)
        if self.rt.is_main:
            save_state(state_path(self.model_path), {
                "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(), "rng": rng,
                "text": self.pipe.to_meta(), "config": asdict(self.cfg), "progress": {**self.s, "elapsed": self.elapsed()}},
                task=TASK)

    def validate(self) -> bool:
        """Evaluate, save the best model and a snapshot, save the state; True when early stopping says stop."""
        s, cfg, net = self.s, self.cfg, unwrap(self.model)
        m = evaluate(net, self.pipe, self.valid, self.refs, self.rt.device)
        improved = m["bleu"] > s["best"]
        s["best"], s["bad"] = max(s["best"], m["bleu"]), 0 if improved else s["bad"] + 1
        s["history"].append({"step": s["step"], "epoch": s["epoch"], **{k: m[k] for k in ("bleu", "bleu_lc_tok", "val_loss")}})
        self.report.metrics("eval", step=s["step"], epoch=s["epoch"], val_bleu=m["bleu"], val_bleu_lc_tok=m["bleu_lc_tok"],
                            val_loss=round(m["val_loss"], 4), best=s["best"])
        self.report.info(f"sample: {m['sample'][:200]}")
        if self.rt.is_main:
            meta = model_meta(cfg, self.mcfg, self.pipe, s, m, self.elapsed(), num_params(net))
            if improved:
                save(self.model_path, net.state_dict(), meta, cfg.save_dtype)
            if cfg.average_last > 1:
                snap_dir = self.model_path.parent / "snapshots"
                snap = snap_dir / f"step-{s['step']}.safetensors"
                save_model(snap, net.state_dict(), meta)
                s["snapshots"] = (s["snapshots"] + [str(snap)])[-cfg.average_last :]
                for old in snap_dir.glob("step-*.safetensors"):
                    if str(old) not in s["snapshots"]:
                        old.unlink(missing_ok=True)
        self.save_state()
        return bool(cfg.patience) and s["bad"] >= cfg.patience


def setup(cfg: TrainConfig, rt: Runtime, report: Reporter) -> tuple[_Run, D.Encoded]:
    """Data, text pipeline, model and optimizer, restored from the saved state with ``cfg.resume``."""
    state = None
    if cfg.resume:
        state = resume_state(state_path(Path(cfg.out) / MODEL_FILE), TASK, config=asdict(cfg), shape_keys=SHAPE_KEYS,
                             required=("model", "optimizer", "rng", "text", "config", "progress"))
    pipe, mcfg, train_set, valid, refs, init_model = prepare(cfg, state, report)
    model = init_model if init_model is not None else build_model(mcfg)
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.98))
    s = {"step": 0, "epoch": 0, "batch": 0, "best": -1.0, "bad": 0, "elapsed": 0.0, "history": [], "snapshots": [],
         "tokens": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        s = state["progress"]
    model = rt.wrap(model)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"], rt.rank)
    params = num_params(model)
    report.start("translate-train", f"{cfg.arch}/{cfg.preset}, {params / 1e6:.2f}M parameters, vocab {mcfg.src_vocab}"
                 f"{'' if pipe.joint else '/' + str(mcfg.tgt_vocab)} ({cfg.subword}, "
                 f"{'joint' if pipe.joint else 'separate'})", rt, s["step"], task=TASK, arch=cfg.arch, params=params,
                 vocab=mcfg.src_vocab)
    return _Run(cfg, rt, report, model, optimizer, pipe, mcfg, valid, refs, s), train_set


class _LossLog:
    """Sums the loss on the device and reads it (one host sync) only at the logging interval."""

    def __init__(self, run: _Run, update):
        self.run, self.update = run, update
        self.total, self.n, self.lr = None, 0, 0.0

    def add(self, loss: torch.Tensor, lr: float) -> None:
        d = loss.detach().float()
        self.total = d if self.total is None else self.total + d
        self.n, self.lr = self.n + 1, lr

    def flush(self) -> None:
        if not self.n:
            return
        s, run = self.run.s, self.run
        loss = float(self.total.item()) / self.n
        check_finite(loss, s["step"], keep=str(run.model_path) if run.model_path.exists() else None)
        self.update(self.n, epoch=round(s["epoch"] + s["batch"] / max(run.batches, 1), 3), loss=loss, lr=self.lr)
        run.report.event("step", step=s["step"], loss=loss, lr=self.lr)
        self.total, self.n = None, 0


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    """Train into ``cfg.out``. The command opens that folder with :func:`dlkit.core.training.run_training`
    (refused when it holds a run unless resuming or overwriting, locked meanwhile); library callers own it."""
    stop = stop or StopSignal()
    run, train_set = setup(cfg, rt, report)
    s, model, optimizer = run.s, run.model, run.optimizer
    lengths = [len(a) + len(b) + 1 for a, b in zip(train_set.src, train_set.tgt)]
    reason = stopped = None
    with report.progress(None, "translate-train") as update:
        log = _LossLog(run, update)
        while s["epoch"] < cfg.epochs and not (stopped or reason):
            # every rank builds the same epoch's batches (a function of seed and epoch) and takes its share
            batches = D.token_batches(lengths, cfg.max_tokens, cfg.seed, s["epoch"])
            mine = batches[rt.rank :: rt.world_size][: len(batches) // rt.world_size or 1]
            run.batches = len(mine)
            while s["batch"] < len(mine):
                lr = inverse_sqrt(s["step"], cfg.lr, cfg.warmup)
                set_lr(optimizer, lr)
                idx = mine[s["batch"]]
                batch = D.collate(train_set, idx, rt.device)
                with rt.autocast():
                    loss = loss_fn(model, batch, cfg.label_smoothing)
                optimizer_step(loss, optimizer, rt.scaler, clip=cfg.clip)
                ntok = sum(len(train_set.tgt[i]) + 1 for i in idx)  # counted on the host: no sync
                s["step"], s["batch"], s["tokens"] = s["step"] + 1, s["batch"] + 1, s["tokens"] + ntok * rt.world_size
                log.add(loss, lr)
                if s["step"] % cfg.log_every == 0 or s["batch"] == len(mine):
                    log.flush()
                reason = stop_reason(stop, rt, t0=run.t0, max_time_s=cfg.max_time, step=s["step"])
                if reason:
                    break
                if cfg.eval_every and s["step"] % cfg.eval_every == 0:
                    log.flush()
                    if run.validate():
                        stopped = True
                        break
            log.flush()
            if s["batch"] >= len(mine) and reason != "interrupted":
                s["epoch"], s["batch"] = s["epoch"] + 1, 0
                if not cfg.eval_every and run.validate():
                    report.info(f"early stopping: no better validation BLEU in {cfg.patience} evaluations")
                    stopped = True
    if reason == "interrupted":
        save_and_interrupt(rt, run.save_state, f"at step {s['step']}", state_path(run.model_path))
    if reason == "max-time":
        report.info(f"--max-time reached after step {s['step']}")
    if not s["history"] or s["history"][-1]["step"] != s["step"]:
        run.validate()
    if rt.is_main and len(s["snapshots"]) > 1:
        finish_average(run)
    return TrainResult(str(run.model_path), s["step"], s["epoch"], s["best"], time.monotonic() - run.t0,
                       s["tokens"] / max(run.elapsed(), 1e-9), num_params(model), s["history"])


def finish_average(run: _Run) -> None:
    """Average the last snapshots; keep the average when its validation BLEU is at least the best's."""
    s = run.s
    paths = [Path(p) for p in s["snapshots"] if Path(p).exists()]
    model = build_model(run.mcfg).to(run.rt.device)
    model.load_state_dict(average_files(paths))
    m = evaluate(model, run.pipe, run.valid, run.refs, run.rt.device)
    run.report.metrics("average", checkpoints=len(paths), val_bleu=m["bleu"], val_bleu_lc_tok=m["bleu_lc_tok"],
                       best=s["best"])
    if m["bleu"] >= s["best"]:
        s["best"] = m["bleu"]
        meta = model_meta(run.cfg, run.mcfg, run.pipe, s, m, run.elapsed(), num_params(model))
        meta["training"]["averaged_checkpoints"] = len(paths)
        save(run.model_path, model.state_dict(), meta, run.cfg.save_dtype)


def save(path: Path, state_dict: dict, meta: dict, save_dtype: str) -> None:
    save_model(path, state_dict, meta, dtype=save_dtype)


def model_meta(cfg: TrainConfig, mcfg: Seq2SeqConfig, pipe: D.TextPipeline, s: dict, m: dict, seconds: float,
               params: int) -> dict:
    names = [C.parse_source(x).path for x in cfg.data] + [x for x in (cfg.tsv, cfg.src) if x]
    data = " + ".join(Path(x).name for x in names) or None
    return {
        "task": TASK,
        "arch": mcfg.arch,
        "config": asdict(mcfg),
        "text": pipe.to_meta(),
        "training": {"data": data, "steps": s["step"], "epochs": s["epoch"],
                     "seconds": round(seconds, 1), "params": params, "recipe": asdict(cfg)},
        "metrics": {"val_bleu": m["bleu"], "val_bleu_lc_tok": m["bleu_lc_tok"], "val_loss": round(m["val_loss"], 4)},
        "headline": f"val BLEU {m['bleu']:.1f} (sacreBLEU, greedy), lc tok {m['bleu_lc_tok']:.1f}",
    }
