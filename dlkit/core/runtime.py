"""Device, precision, seeding and the distributed rank, decided once per run.

Every training loop gets a :class:`Runtime` and uses ``rt.autocast()`` and ``rt.scaler`` from it, so
there is exactly one AMP code path (nanoGPT's ``ctx`` / ``GradScaler(enabled=fp16)`` pattern).
Under ``torchrun`` the RANK / WORLD_SIZE variables switch on DDP (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
from dataclasses import dataclass, field

# Start-up: importing torch makes ~180,000 long-lived objects, and each full collection of the cyclic GC walks them
# all again (80-100 ms each, two or three before `dlkit translate` reaches its first sentence). When this module is
# the first to import torch, collect nothing during the import and freeze what it made (they live as long as the
# process): later collections skip them. (gc.freeze: CPython's tool for exactly this, Python >= 3.7.)
_PAUSE_GC = "torch" not in sys.modules and gc.isenabled()
if _PAUSE_GC:
    gc.disable()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

if _PAUSE_GC:
    gc.freeze()
    gc.enable()

from dlkit.core.errors import DlkitError, UsageError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    precision: str  # resolved: fp32 | bf16 | fp16
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    scaler: torch.amp.GradScaler = field(default=None, repr=False)  # type: ignore[assignment]
    # convolutional models trained in channels_last (resolve_memory_format); None: the command does not choose the
    # format through the runtime (its own code may, e.g. the caption encoder)
    channels_last: bool | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return None if self.precision == "fp32" else _DTYPES[self.precision]

    def autocast(self):
        """Mixed-precision context for forward passes; a no-op in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device (channels_last where :attr:`channels_last`) and wrap in DDP when distributed. Save
        ``unwrap(model)``, never the wrapper (its state dict holds the same values in either memory format)."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return model

    def all_reduce_mean(self, value: float) -> float:
        """Mean of a scalar across ranks (identity on one process)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def all_reduce_max(self, value: int) -> int:
        """Largest integer across ranks (identity on one process): how ranks agree on a decision.

        It goes through :func:`control_group` (gloo, on the CPU), so a check made every step does not wait
        for the GPU the way an NCCL all-reduce read back with ``.item()`` would."""
        if not self.distributed:
            return int(value)
        t = torch.tensor([int(value)], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=control_group())
        return int(t.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers (what gets saved)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def num_params(model: torch.nn.Module) -> int:
    """Parameters of the plain module under any wrapper; a tied (shared) tensor counts once."""
    return sum(p.numel() for p in unwrap(model).parameters())


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DlkitError("--device mps: Apple MPS is not available on this machine")
        return torch.device("mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DlkitError(f"--device {spec}: CUDA is not available on this machine (try --device cpu)")
        index = local_rank
        if ":" in spec:
            try:
                index = int(spec.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {spec}: expected cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise DlkitError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device("cuda", index)
    raise UsageError(f"--device {spec}: expected auto, cpu, cuda, cuda:N or mps")


# --precision auto on a CPU, per model family: bf16 autocast where benchmarks/cpu_speed.py measured it faster than
# fp32 (table in benchmarks/RESULTS.md) AND the family's quality metric was checked not to drop under it, on CPUs
# that compute bf16 natively (AVX512-BF16 or AMX, what `dlkit doctor` reports; elsewhere bf16 is emulated and slow).
# A family is "task" or "task:variant" (the architecture); an entry names either (RESULTS.md, "bf16 quality"):
# - lm-large (nanoGPT's baby GPT, 6L/384, context 256): a step 1.46x faster, training loss over 200 steps as
#   nanoGPT's fp32. The small GPT gains nothing from bf16 and stays out ("lm" and "lm-small");
# - the convnets, same recipe, steps and seed in fp32 and bf16 on the AMX CPU: classifier (airbench: 3.7x; 61.6
#   vs 62.3% after 30 steps; 90.44 vs 90.52% at 9.9 epochs in the recipe's ablation), superres (2.1x; Set5 28.86
#   vs 28.86 dB), gan:dcgan (1.4x; Parzen 30.1 vs 27.9), frames:simvp (1.6x; val MSE 117.48 vs 117.45) and
#   random-labels:inception-small (2.1x; test 51.0 vs 49.6%). Not the MLP GANs (toys: 1-2-d data, small
#   matrices), ConvLSTM (not checked) or translate (inference 1.1x, BLEU 55.35 vs 55.42 on Multi30k val).
CPU_AUTO_BF16: frozenset[str] = frozenset({"lm-large", "classifier", "superres", "gan:dcgan", "frames:simvp",
                                           "random-labels:inception-small"})


def in_table(family: str | None, table: frozenset[str]) -> bool:
    """Whether ``family`` ("task" or "task:variant") or its task is listed in ``table``."""
    return family is not None and (family in table or family.split(":", 1)[0] in table)


# --memory-format auto on a CPU, per model family: channels_last where benchmarks/cpu_speed.py measured the fp32
# training step faster in it on both CPUs it ran on (benchmarks/RESULTS.md): superres 1.07x (AMD EPYC) and 1.28x
# (Intel Xeon with AMX), random-labels 1.51x and 1.26x. Frames (1.19x on one, 0.95x on the other) and DCGAN (1.02x,
# 1.07x: inside the run-to-run spread) stay contiguous; the caption encoder, the adversarial victim and the airbench
# recipe were channels_last already. The format changes the order of the sums, not the model: the same values to
# float rounding, so no quality check is needed beyond the tests'.
CPU_CHANNELS_LAST: frozenset[str] = frozenset({"superres", "random-labels"})
MEMORY_FORMATS = ("auto", "contiguous", "channels-last")


def resolve_memory_format(spec: str, device: torch.device, family: str | None = None) -> bool:
    """True for channels_last: forced by ``channels-last``, or 'auto' on a CPU for a family in
    :data:`CPU_CHANNELS_LAST` (GPUs keep the contiguous format: not measured there)."""
    if spec not in MEMORY_FORMATS:
        raise UsageError(f"--memory-format {spec}: expected one of {', '.join(MEMORY_FORMATS)}")
    if spec != "auto":
        return spec == "channels-last"
    return device.type == "cpu" and in_table(family, CPU_CHANNELS_LAST)


def cpu_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX): there ``--precision bf16`` can pay off."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    try:  # no /proc (macOS, Windows): ask torch's dispatcher
        return "AMX" in torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - best effort only
        return False


def resolve_precision(spec: str, device: torch.device, family: str | None = None, native_bf16=cpu_bf16) -> str:
    """'auto' means bf16 on GPUs that support it, fp16 on other GPUs; on a CPU, bf16 for the model ``family``
    (``"gan"``, ``"superres"``...) when it is in :data:`CPU_AUTO_BF16` and the CPU has native bf16, else fp32."""
    spec = (spec or "auto").lower()
    if spec not in PRECISIONS:
        raise UsageError(f"--precision {spec}: expected one of {', '.join(PRECISIONS)}")
    if spec == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and in_table(family, CPU_AUTO_BF16) and native_bf16():
            return "bf16"
        return "fp32"
    if spec == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 needs a GPU; use bf16 or fp32 on the CPU")
    return spec


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_CONTROL: list = []  # the gloo group for small control messages, made once after the process group


def control_group():
    """A gloo group over all ranks for decisions and RNG states (CPU values): the default group itself when
    it is gloo, else one made the first time (every rank reaches that first call at the same point)."""
    if dist.get_backend() == "gloo":
        return None
    if not _CONTROL:
        _CONTROL.append(dist.new_group(backend="gloo"))
    return _CONTROL[0]


def _init_distributed() -> tuple[int, int, int]:
    """Join the torchrun process group if RANK is set; returns (rank, world_size, local_rank)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    control_group()  # made now, at the same point on every rank
    return rank, world, local_rank


def set_threads(threads: int | None) -> None:
    """Set torch's CPU threads: ``--threads`` if given, else the idle cores measured now (core/threads.py)."""
    from dlkit.core.threads import choose_threads

    import sys

    n = choose_threads(threads, warn=lambda m: print(f"warning: {m}", file=sys.stderr, flush=True))
    if n:
        torch.set_num_threads(n)


MAX_SEED = 2**32 - 1


def check_seed(seed: int) -> None:
    """--seed must fit every generator it seeds (and the per-run seeds derived from it by multiplication)."""
    from dlkit.core.limits import at_most

    if seed is not None and seed < 0:
        raise UsageError(f"--seed {seed} must be 0 or more")
    at_most("--seed", seed, MAX_SEED, "seeds derived from it must stay within torch's 64-bit generator seeds")


def make_runtime(device: str = "auto", precision: str = "auto", seed: int = 0, distributed: bool = True,
                 threads: int | None = None, family: str | None = None, memory_format: str | None = None) -> Runtime:
    """Resolve device, precision and (for commands with --memory-format) memory format once (``family``: what
    'auto' means on a CPU, see resolve_precision and resolve_memory_format), seed every RNG, join DDP when
    launched by torchrun."""
    check_seed(seed)
    set_threads(threads)
    rank, world, local_rank = _init_distributed() if distributed else (0, 1, 0)
    dev = resolve_device(device, local_rank)
    prec = resolve_precision(precision, dev, family)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    seed_everything(seed)
    scaler = torch.amp.GradScaler(dev.type if dev.type != "mps" else "cpu", enabled=prec == "fp16")
    cl = None if memory_format is None else resolve_memory_format(memory_format, dev, family)
    return Runtime(dev, prec, seed, rank, world, local_rank, scaler, channels_last=cl)


def shutdown(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        _CONTROL.clear()
        dist.destroy_process_group()


def rng_state(rt: Runtime | None = None) -> dict:
    """The torch RNGs (dropout, init) as tensors, saved with the resumable state.

    Training loops draw their batches from generators seeded by (seed, step), never from numpy's
    global RNG, so these are all the RNG state a resume needs. Under DDP the ranks' states differ (a rank
    whose batch holds longer sentences draws more dropout masks), so with a distributed ``rt`` every
    rank's state is gathered (``"ranks"``): call it on every rank, then let rank 0 save it."""
    state: dict = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    if rt is not None and rt.distributed:
        ranks: list = [None] * rt.world_size
        dist.all_gather_object(ranks, state, group=control_group())
        state = {**state, "ranks": ranks}
    return state


def set_rng_state(state: dict, rank: int = 0) -> None:
    """Restore :func:`rng_state`: this rank's own state when the run saved every rank's (a run resumed on
    another number of processes takes rank 0's for the ranks the saved run did not have)."""
    ranks = state.get("ranks")
    if ranks:
        state = ranks[rank] if rank < len(ranks) else ranks[0]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
