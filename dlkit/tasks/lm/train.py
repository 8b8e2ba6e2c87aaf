"""Training a GPT language model: AdamW, warmup + cosine, clipping, accumulation, eval, resume, DDP."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from dlkit.core.atomic import check_writable_dir
from dlkit.core.modelfile import as_stored, check_shapes, load_model_file, save_model
from dlkit.core.state import check_resume, save_state, state_path
from dlkit.core.threads import busy_watch
from dlkit.core.errors import DlkitError, ModelFileError, UsageError
from dlkit.core.interrupt import StopSignal
from dlkit.core.optim import adamw, check_finite, optimizer_step, set_lr, warmup_cosine
from dlkit.core.report import Reporter
from dlkit.core.runtime import Runtime, num_params, rng_state, set_rng_state, unwrap
from dlkit.core.training import resume_state, save_and_interrupt, stop_reason
from dlkit.tasks.lm.data import Corpus, check_length, prepare_corpus
from dlkit.tasks.lm.infer import TASK, sample_text
from dlkit.tasks.lm.model import GPT, RENAMED_PRESETS, GPTConfig, preset

MODEL_FILE = "model.safetensors"
STATE_KEYS = ("model", "optimizer", "step", "best_val", "elapsed", "history", "rng", "tokenizer", "config")


def shape_keys(cfg: "TrainConfig") -> tuple[str, ...]:
    """Settings that decide tensor shapes: a --resume with other values is refused (check_resume)."""
    return ("preset", "block_size", "tokenizer") + (("vocab_size",) if cfg.tokenizer == "bpe" else ())


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/lm"
    preset: str = "small"
    block_size: int | None = None
    dropout: float | None = None
    tokenizer: str = "char"
    vocab_size: int = 4096
    val: str | None = None
    val_fraction: float = 0.1
    batch_size: int = 12  # per process, per micro-step
    grad_accum: int = 1
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 250
    eval_iters: int = 50
    log_every: int = 10  # loss is read from the device (.item()) only every log_every steps
    sample_tokens: int = 200
    max_time: float | None = None  # seconds of this run (a resumed run's earlier time does not count)
    compile: bool = False
    seed: int = 1337
    save_dtype: str = "fp32"
    resume: bool = False


@dataclass
class TrainResult:
    model_path: str
    steps: int
    best_val_loss: float
    last_train_loss: float
    seconds: float
    tokens_per_s: float
    val_loss: float | None = None  # the best model's exact loss on the validation split (finalize)
    history: list = field(default_factory=list)


def model_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    try:
        return preset(cfg.preset, block_size=cfg.block_size, dropout=cfg.dropout, vocab_size=vocab_size)
    except KeyError:
        from dlkit.tasks.lm.model import PRESETS

        raise UsageError(f"--preset {cfg.preset}: expected one of {', '.join(PRESETS)}") from None


def batch_offsets(step: int, micro: int, n_tokens: int, block: int, global_batch: int, seed: int) -> torch.Tensor:
    """The global batch of step ``step`` is a pure function of (seed, step, micro): resume needs no data
    position, and N processes each taking a slice see exactly the batch one process would."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 101 + micro)
    return torch.randint(n_tokens - block - 1, (global_batch,), generator=g)


@torch.no_grad()
def estimate_loss(model, corpus: Corpus, cfg: TrainConfig, block: int, rt: Runtime) -> dict[str, float]:
    """nanoGPT's estimate: mean loss over ``eval_iters`` random batches per split (fixed per rank)."""
    model.eval()
    out = {}
    for split in ("train", "val"):
        data = corpus.train if split == "train" else corpus.val
        g = torch.Generator().manual_seed(cfg.seed + 7919 * (rt.rank + 1))
        losses = []
        for _ in range(cfg.eval_iters):
            offs = torch.randint(len(data) - block - 1, (cfg.batch_size,), generator=g)
            x, y = (t.to(rt.device) for t in corpus.batch(split, offs, block))
            with rt.autocast():
                _, loss = model(x, y)
            losses.append(loss.item())
        out[split] = rt.all_reduce_mean(sum(losses) / len(losses))
    model.train()
    return out


@torch.no_grad()
def full_val_loss(model: GPT, corpus: Corpus, block: int, device, batch: int = 32) -> float:
    """Exact mean loss over the whole validation split in non-overlapping context windows."""
    model.eval()
    data = corpus.val
    starts = list(range(0, len(data) - block - 1, block))
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        offs = torch.tensor(starts[i : i + batch])
        x, y = (t.to(device) for t in corpus.batch("val", offs, block))
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        total += loss.item()
        count += y.numel()
    return total / max(count, 1)


def train(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal | None = None) -> TrainResult:
    stop = stop or StopSignal()
    out = check_writable_dir(cfg.out)
    model_path = out / MODEL_FILE
    state_file = state_path(model_path)
    state = _load_state(cfg, state_file) if cfg.resume else None
    if state is None and rt.is_main:  # --overwrite (or a fresh folder): an old run must not be resumable later
        for old in (model_path, state_file):
            old.unlink(missing_ok=True)

    corpus, mcfg = _prepare(cfg, rt, out, state)
    model, optimizer = _build(cfg, rt, mcfg, state)
    start, best, elapsed, history = (state["step"], state["best_val"], state["elapsed"], state["history"]) \
        if state else (0, math.inf, 0.0, [])
    fwd = torch.compile(model) if cfg.compile else model

    params = num_params(model)
    report.start("lm-train", f"{params / 1e6:.2f}M parameters, vocab {mcfg.vocab_size}, {len(corpus.train):,} train / "
                 f"{len(corpus.val):,} val tokens", rt, start, task=TASK, params=params, vocab=mcfg.vocab_size,
                 steps=cfg.steps)
    kept = {"weights": None, "meta": None}  # the best model (a CPU copy) and its metadata, for finalize()
    t0 = time.monotonic()
    save = _saver(cfg, rt, model, optimizer, corpus, mcfg, kept, elapsed, history, t0)
    block = mcfg.block_size

    def evaluate(step: int, best: float, final: bool = False) -> float:
        return _evaluate(fwd, model, corpus, cfg, block, rt, report, step, history, best, save, final)

    step, best, loss_val, reason = _loop(cfg, rt, report, stop, (model, fwd, optimizer), corpus, block, start, best,
                                         evaluate, t0)
    if reason == "interrupted":
        save_and_interrupt(rt, lambda: save(step, best_val=best), f"at step {step}", state_file)
    if reason == "max-time":
        report.info(f"--max-time reached after step {step}")
    if step > start:
        best = evaluate(step, best, final=True)
    seconds = time.monotonic() - t0
    val_loss = None
    if rt.is_main and (kept["weights"] is not None or model_path.exists()):
        if kept["weights"] is None:  # a resumed run that found no better model: the earlier run's best
            kept["weights"], kept["meta"] = load_model_file(model_path, TASK)
        val_loss = finalize(model_path, mcfg, kept["weights"], kept["meta"], corpus, rt.device, cfg.save_dtype)
        report.metrics("final", best_val_loss_estimate=best, val_loss=val_loss, val_tokens=len(corpus.val[:FULL_EVAL_TOKENS]))
    tps = (step - start) * cfg.batch_size * rt.world_size * cfg.grad_accum * block / max(seconds, 1e-9)
    return TrainResult(str(model_path), step, best, loss_val, seconds, tps, val_loss, history)


def _loop(cfg: TrainConfig, rt: Runtime, report: Reporter, stop: StopSignal, parts, corpus: Corpus, block: int,
          start: int, best: float, evaluate, t0: float) -> tuple[int, float, float, str | None]:
    """Steps from ``start`` until --steps, --max-time or a stop; returns (step, best, last loss, reason)."""
    model, fwd, optimizer = parts
    loss_val, step, reason = float("nan"), start, None
    keep = Path(cfg.out) / MODEL_FILE
    watch = busy_watch(report.info)  # threads follow the free cores when OpenMP spins long (core/threads.py)
    with report.progress(cfg.steps, "lm-train", start=start) as update:
        while step < cfg.steps and reason is None:
            if step % cfg.eval_every == 0 and step > start:
                best = evaluate(step, best)
            set_lr(optimizer, warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr))
            loss = _train_step(step, cfg, rt, model, fwd, optimizer, corpus, block)
            watch()
            step += 1
            reason = stop_reason(stop, rt, t0=t0, max_time_s=cfg.max_time, step=step, max_steps=cfg.steps)
            if step % cfg.log_every == 0 or reason:
                # the only device sync of the loop (besides evaluations); averaged so every rank decides alike
                loss_val = rt.all_reduce_mean(loss.item())
                check_finite(loss_val, step, str(keep) if rt.is_main and keep.exists() else None)
                update(1, loss=loss_val)
                report.event("step", step=step, loss=loss_val, lr=optimizer.param_groups[0]["lr"])
            else:
                update(1)
    return step, best, loss_val, reason


def _saver(cfg: TrainConfig, rt: Runtime, model, optimizer, corpus: Corpus, mcfg: GPTConfig, kept: dict,
           elapsed: float, history: list, t0: float):
    """``save(step, val=None, best_val=None, final=False)``: the state always; the model too when ``val`` is a
    new best (at the final evaluation finalize() writes it, with its exact loss). Called on every rank."""
    model_path = Path(cfg.out) / MODEL_FILE

    def save(step: int, val: float | None = None, best_val: float | None = None, final: bool = False) -> None:
        rng = rng_state(rt)  # every rank's (a collective)
        if not rt.is_main:
            return
        seconds = elapsed + time.monotonic() - t0
        if val is not None:
            kept["weights"] = _cpu_copy(unwrap(model).state_dict())
            kept["meta"] = model_meta(cfg, mcfg, corpus, step, val, seconds)
            if not final:
                save_model(model_path, kept["weights"], kept["meta"], dtype=cfg.save_dtype)
        save_state(state_path(model_path), {
            "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "best_val": best_val, "elapsed": seconds, "history": history,
            "rng": rng, "tokenizer": corpus.tokenizer.to_meta(), "config": asdict(cfg),
        }, task=TASK)
    return save


def _cpu_copy(sd: dict) -> dict:
    """A CPU copy of a state dict that keeps tied tensors tied (save_model stores them once)."""
    copies, out = {}, {}
    for k, v in sd.items():
        key = (v.data_ptr(), v.shape)
        if key not in copies:
            copies[key] = v.detach().to("cpu", copy=True)
        out[k] = copies[key]
    return out


def _prepare(cfg: TrainConfig, rt: Runtime, out: Path, state: dict | None) -> tuple[Corpus, GPTConfig]:
    """The encoded corpus and the model config; a fresh run that fails on its data leaves no "run" behind."""
    try:
        corpus = _corpus(cfg, rt, out, state)
        mcfg = model_config(cfg, corpus.tokenizer.vocab_size)
        check_length(corpus, mcfg.block_size)
    except DlkitError:
        if state is None and rt.is_main:
            for cache in (*out.glob("tokens*"), *out.glob("data-*.txt"), *out.glob("val-*.txt")):
                cache.unlink(missing_ok=True)
        raise
    return corpus, mcfg


def _corpus(cfg: TrainConfig, rt: Runtime, out: Path, state: dict | None) -> Corpus:
    """Rank 0 encodes the text (or finds it encoded); the other ranks then open the same files."""
    args = (Path(cfg.data), out, cfg.tokenizer, cfg.vocab_size, cfg.val_fraction, Path(cfg.val) if cfg.val else None)
    corpus = prepare_corpus(*args, state["tokenizer"] if state else None) if rt.is_main else None
    rt.barrier()
    return corpus if rt.is_main else prepare_corpus(*args, _tokenizer_meta(out))


def _load_state(cfg: TrainConfig, state_file: Path) -> dict:
    """The saved state of the run in --out, refused in one line when its shape settings differ."""
    state = resume_state(state_file, TASK, required=STATE_KEYS)
    saved = state["config"] if isinstance(state["config"], dict) else {}
    if saved.get("preset") in RENAMED_PRESETS:  # a run saved under a preset's earlier name
        saved = {**saved, "preset": RENAMED_PRESETS[saved["preset"]]}
    check_resume(saved, asdict(cfg), shape_keys(cfg), cfg.out)
    return state


def _build(cfg: TrainConfig, rt: Runtime, mcfg: GPTConfig, state: dict | None):
    """The model (on the device, DDP-wrapped when distributed) and its optimizer, restored on --resume."""
    model = GPT(mcfg)
    # fused AdamW: one kernel per parameter on CUDA and on the CPU (ATen's vectorised CPU kernel), instead of a
    # dozen elementwise ops per tensor
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, betas=(0.9, 0.99), fused=rt.device.type in ("cuda", "cpu"))
    if state is not None:
        where = state_path(Path(cfg.out) / MODEL_FILE)
        saved = state["model"] if isinstance(state["model"], dict) else {}
        check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                          {k: tuple(getattr(v, "shape", ())) for k, v in saved.items()}, where)
        model.load_state_dict(saved)
        try:
            optimizer.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"], rt.rank)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ModelFileError(f"training state '{where}' does not fit this run: {str(e).splitlines()[0][:160]}") from None
    return rt.wrap(model), optimizer


def _train_step(step, cfg: TrainConfig, rt: Runtime, model, fwd, optimizer, corpus: Corpus, block: int) -> torch.Tensor:
    """One optimizer step over ``grad_accum`` micro-batches; each rank takes its slice of the global batch.

    Returns the last micro-batch's loss as a tensor: reading it (``.item()``) waits for the device, so
    the loop does that only at the logging interval."""
    B = cfg.batch_size
    for micro in range(cfg.grad_accum):
        offs = batch_offsets(step, micro, len(corpus.train), block, B * rt.world_size, cfg.seed)
        x, y = (t.to(rt.device, non_blocking=True) for t in corpus.batch("train", offs[rt.rank * B : (rt.rank + 1) * B], block))
        last = micro == cfg.grad_accum - 1
        sync = contextlib.nullcontext() if last or not rt.distributed else model.no_sync()  # all-reduce once
        with sync:
            with rt.autocast():
                _, loss = fwd(x, y)
            optimizer_step(loss / cfg.grad_accum, optimizer, rt.scaler, clip=cfg.clip, step=last)
    return loss.detach()


def _evaluate(fwd, model, corpus, cfg, block, rt, report, step, history, best, save, final=False) -> float:
    losses = estimate_loss(fwd, corpus, cfg, block, rt)
    check_finite(losses["val"], step, str(Path(cfg.out) / MODEL_FILE) if (Path(cfg.out) / MODEL_FILE).exists() else None)
    history.append({"step": step, **losses})
    improved = losses["val"] < best
    best = min(best, losses["val"])
    report.metrics("eval", step=step, train_loss=losses["train"], val_loss=losses["val"], best_val=best)
    if rt.is_main and cfg.sample_tokens and not final:
        text = sample_text(unwrap(model), corpus.tokenizer, "", cfg.sample_tokens, rt.device, seed=step)
        report.info("sample: " + text.replace("\n", " / ")[:300])
    save(step, losses["val"] if improved else None, best, final)
    return best


def model_meta(cfg: TrainConfig, mcfg: GPTConfig, corpus: Corpus, step: int, val: float, seconds: float) -> dict:
    return {
        "task": TASK,
        "arch": "gpt",
        "config": asdict(mcfg),
        "tokenizer": corpus.tokenizer.to_meta(),
        "training": {"data": Path(corpus.source).name, "steps": step, "seconds": round(seconds, 1),
                     "recipe": asdict(cfg)},
        "metrics": {"val_loss_estimate": round(val, 4)},
        "headline": f"val loss {val:.4f} (estimate, step {step})",
    }


FULL_EVAL_TOKENS = 2_000_000


def finalize(model_path: Path, mcfg: GPTConfig, weights: dict, meta: dict, corpus: Corpus, device,
             save_dtype: str = "fp32") -> float:
    """Measure the best model's exact validation loss (whole split, up to FULL_EVAL_TOKENS) and write the
    model file with it in its metadata. ``weights`` and ``meta`` are the best model's, kept in memory."""
    model = GPT(mcfg)
    model.load_state_dict({k: as_stored(v, save_dtype) for k, v in weights.items()})  # measure what the file holds
    model.to(device)
    val = Corpus(corpus.train, corpus.val[:FULL_EVAL_TOKENS], corpus.tokenizer, corpus.source)
    loss = full_val_loss(model, val, mcfg.block_size, device)
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    meta["metrics"] = {**meta["metrics"], "val_loss": round(loss, 4),
                       "val_tokens": int(min(len(corpus.val), FULL_EVAL_TOKENS))}
    meta["headline"] = f"val loss {loss:.4f} nats/token"
    save_model(model_path, weights, meta, dtype=save_dtype)
    return loss


def _tokenizer_meta(out: Path) -> dict:
    import json

    return json.loads((out / "tokens.json").read_text())["tokenizer"]
