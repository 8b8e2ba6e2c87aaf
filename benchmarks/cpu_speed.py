"""CPU speed of every command family: a training step and an inference pass, fp32 vs bf16 autocast x contiguous vs
channels_last. The table behind ``--precision auto`` and the memory-format defaults (dlkit.core.runtime.CPU_AUTO).

  flock /tmp/dlkit-heavy.lock python benchmarks/cpu_speed.py [--repeats 5] [--families lm,gan,...] [--compile]

One configuration at a time, in this process, 2 torch threads (or --threads), each cell the median of --repeats
timed calls after 2 warm-up calls, models freshly built with the same seed and random weights (speed does not
depend on the weights). Shapes are the commands' defaults (batch sizes of the training commands, one typical
input for inference). channels_last applies to convolutional models only ("-" elsewhere). The winner of each row
is in bold. ``--compile`` adds a second table: each family's fastest training configuration with its models
built through ``torch.compile`` (first step with the compile, steady step, and after how many seconds of eager
training the compile has paid for itself). Run it idle (``uptime`` below 0.5): the load is printed with each row.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


COMPILE = False  # --compile: the models are built through torch.compile (inductor) for the compile table


def _c(m):
    return torch.compile(m) if COMPILE else m


def _cl(t: torch.Tensor, on: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if on and t.dim() == 4 else t


def _sgd_step(model, loss_fn, opt):
    def step(ctx):
        with ctx():
            loss = loss_fn()
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _infer(fn):
    def run(ctx):
        with torch.inference_mode(), ctx():
            fn()
    return run


def lm(cl: bool):
    from dlkit.tasks.lm.model import GPT, preset

    m = _c(GPT(preset("small", vocab_size=65)))
    x = torch.randint(65, (12, 64))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    return _sgd_step(m, lambda: m(x, x)[1], opt), _infer(lambda: m(x)), "GPT small (nanoGPT CPU config), batch 12 x 64"


def translate(cl: bool):
    from dlkit.tasks.translate.model import build_model, preset

    m = _c(build_model(preset("transformer", "small")))
    src, tgt = torch.randint(4, 8000, (64, 24)), torch.randint(4, 8000, (64, 26))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)

    def loss():
        out = m(src, tgt[:, :-1])
        logits = out[0] if isinstance(out, tuple) else out
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt[:, 1:].reshape(-1))
    return _sgd_step(m, loss, opt), _infer(lambda: m(src, tgt[:, :-1])), "Transformer small, 64 pairs x 24 subwords"


def caption(cl: bool):
    from dlkit.tasks.caption.encoder import EncoderSpec, _build

    enc = _build(EncoderSpec(), load_pretrained=False)
    enc = _c(enc.to(memory_format=torch.channels_last) if cl else enc)
    x = _cl(torch.randn(16, 3, 224, 224), cl)
    opt = torch.optim.SGD(enc.parameters(), lr=1e-3)
    return (_sgd_step(enc, lambda: enc(x).float().mean(), opt), _infer(lambda: enc(x)),
            "EfficientNet-Lite0 encoder, 16 photos at 224 (train: fine-tuning)")


def superres(cl: bool):
    from dlkit.tasks.superres.model import PRESETS, build_model

    m = build_model(PRESETS["srresnet"])
    m = _c(m.to(memory_format=torch.channels_last) if cl else m)
    lr, hr = _cl(torch.rand(16, 3, 24, 24), cl), _cl(torch.rand(16, 3, 96, 96), cl)
    one = _cl(torch.rand(1, 3, 128, 128), cl)
    opt = torch.optim.Adam(m.parameters(), lr=1e-4)
    m_eval = lambda: m.eval()(one)  # noqa: E731
    step = _sgd_step(m, lambda: F.mse_loss(m.train()(lr).float(), hr), opt)
    return step, _infer(m_eval), "SRResNet x4: train 16 crops 24->96, infer one 128x128 -> 512x512"


def gan(cl: bool):
    from dlkit.tasks.gan.model import GANConfig, build_discriminator, build_generator

    cfg = GANConfig(data_shape=(3, 32, 32))
    g, d = build_generator(cfg), build_discriminator(cfg)
    if cl:
        g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
    g, d = _c(g), _c(d)
    z, real = torch.randn(64, 100), _cl(torch.rand(64, 3, 32, 32) * 2 - 1, cl)
    og, od = (torch.optim.Adam(n.parameters(), lr=2e-4, betas=(0.5, 0.999)) for n in (g, d))
    ones, zeros = torch.ones(64), torch.zeros(64)

    def step(ctx):  # one D step and one G step (non-saturating loss), as gan-train does
        with ctx():
            fake = _cl(g(z), cl)
            ld = F.binary_cross_entropy_with_logits(d(real).float().view(-1), ones) + \
                F.binary_cross_entropy_with_logits(d(fake.detach()).float().view(-1), zeros)
        ld.backward()
        od.step()
        od.zero_grad(set_to_none=True)
        with ctx():
            lg = F.binary_cross_entropy_with_logits(d(fake).float().view(-1), ones)
        lg.backward()
        og.step()
        og.zero_grad(set_to_none=True)
    return step, _infer(lambda: g(z)), "DCGAN 32x32 colour, batch 64 (D + G step; infer: G)"


def classifier(cl: bool, arch: str = "airbench", batch: int = 500):
    from dlkit.nets.classifiers import build_classifier

    m = build_classifier(arch, 3, 10, 32)
    m = _c(m.to(memory_format=torch.channels_last) if cl else m)
    x, y = _cl(torch.randn(batch, 3, 32, 32), cl), torch.randint(10, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    step = _sgd_step(m, lambda: F.cross_entropy(m.train()(x).float(), y), opt)
    return step, _infer(lambda: m.eval()(x)), f"{arch} CIFAR-10, batch {batch}"


def random_labels(cl: bool):
    step, infer, _ = classifier(cl, "inception-small", 128)
    return step, infer, "inception-small (Zhang et al.) CIFAR-10, batch 128"


def adversarial(cl: bool):
    from dlkit.nets.classifiers import build_classifier

    m = build_classifier("resnet", 3, 10, 32).eval()
    m = _c(m.to(memory_format=torch.channels_last) if cl else m)
    x, y = _cl(torch.rand(100, 3, 32, 32), cl), torch.randint(10, (100,))

    def attack(ctx):  # one PGD iteration: the gradient of the loss with respect to the input
        xa = x.clone().requires_grad_(True)
        with ctx():
            loss = F.cross_entropy(m(xa).float(), y)
        (g,) = torch.autograd.grad(loss, xa)
        with torch.no_grad():
            x.add_(g.sign() * 1e-3).clamp_(0, 1)
    return attack, _infer(lambda: m(x)), "resnet CIFAR-10 victim, batch 100 (train column: one PGD step)"


def frames(cl: bool):
    from dlkit.tasks.frames.model import build_model, preset

    m = build_model(preset("simvp-cpu"))
    m = _c(m.to(memory_format=torch.channels_last) if cl else m)
    seq = torch.rand(8, 20, 1, 64, 64)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    step = _sgd_step(m, lambda: F.mse_loss(m(seq[:, :10]).float(), seq[:, 10:]), opt)
    return step, _infer(lambda: m(seq[:, :10])), "SimVP (simvp-cpu), 8 Moving-MNIST sequences 10 -> 10"


FAMILIES = {"lm": (lm, False), "translate": (translate, False), "caption": (caption, True),
            "superres": (superres, True), "gan": (gan, True), "classifier": (classifier, True),
            "random-labels": (random_labels, True), "adv-attack": (adversarial, True), "frames": (frames, True)}


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def time_cell(fn, ctx, repeats: int) -> float:
    for _ in range(2):
        fn(ctx)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(ctx)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def cpu_line() -> str:
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "")
    name = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
                platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return (f"{name}, {os.cpu_count()} CPUs, AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}, "
            f"AMX {'yes' if 'amx_bf16' in flags else 'no'}, torch {torch.__version__}, {torch.get_num_threads()} threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--compile", action="store_true",
                    help="also time each family's fastest training configuration built through torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_line()}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    configs = [("fp32", contextlib.nullcontext, False), ("bf16", _bf16, False), ("fp32", contextlib.nullcontext, True),
               ("bf16", _bf16, True)]
    print("| family | what | pass | fp32 | bf16 | fp32 channels_last | bf16 channels_last | load |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    best_train = {}
    for fam in args.families.split(","):
        make, conv = FAMILIES[fam]
        rows = {"train": [], "infer": []}
        what = ""
        for prec, ctx, cl in configs:
            if cl and not conv:
                rows["train"].append(None)
                rows["infer"].append(None)
                continue
            torch.manual_seed(0)
            train_fn, infer_fn, what = make(cl)
            rows["train"].append(time_cell(train_fn, ctx, args.repeats))
            rows["infer"].append(time_cell(infer_fn, ctx, args.repeats))
        best_train[fam] = min((c, i) for i, c in enumerate(rows["train"]) if c is not None)
        for kind, cells in rows.items():
            best = min(c for c in cells if c is not None)
            shown = ["-" if c is None else (f"**{c:.1f} ms**" if c == best else f"{c:.1f} ms") for c in cells]
            print(f"| {fam} | {what} | {kind} | " + " | ".join(shown) + f" | {os.getloadavg()[0]:.2f} |", flush=True)
    if args.compile:
        compile_table(best_train, configs, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def compile_table(best_train: dict, configs: list, repeats: int) -> None:
    """Each family's fastest eager training configuration again, its models through torch.compile: the first
    step (compiling included), the steady step, and when the compile has paid for itself in a training run."""
    global COMPILE
    print("\n| family | configuration | eager step | first compiled step | compiled step | speed-up | "
          "pays back after | within a minute | load |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for fam, (eager_ms, i) in best_train.items():
        prec, ctx, cl = configs[i]
        torch.manual_seed(0)
        torch._dynamo.reset()
        COMPILE = True
        try:
            train_fn, _, _ = FAMILIES[fam][0](cl)
            t = time.perf_counter()
            train_fn(ctx)
            first = time.perf_counter() - t
            ms = time_cell(train_fn, ctx, repeats)
        except Exception as e:  # noqa: BLE001 - a family inductor cannot compile is a row, not the end
            print(f"| {fam} | {prec}{' channels_last' if cl else ''} | {eager_ms:.1f} ms | failed: "
                  f"{type(e).__name__} | - | - | - | - | {os.getloadavg()[0]:.2f} |", flush=True)
            continue
        finally:
            COMPILE = False
        saved = eager_ms - ms  # per step
        cost = first * 1000 - eager_ms  # compiling, beyond the step it also ran
        payback = cost / saved * eager_ms / 1000 if saved > 0 else float("inf")  # seconds of eager training
        shown = "never" if payback == float("inf") else f"{payback:.0f} s"
        print(f"| {fam} | {prec}{' channels_last' if cl else ''} | {eager_ms:.1f} ms | {first:.1f} s | {ms:.1f} ms | "
              f"{eager_ms / ms:.2f}x | {shown} | {'yes' if payback <= 60 else 'no'} | {os.getloadavg()[0]:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
