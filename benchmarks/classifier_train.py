"""Train the bundled classifiers (`mnist-cnn`, `cifar10-resnet`) with dlkit's shared classification loop.

Fast recipe for a CPU (after Myrtle's ResNet-9 and Keller Jordan's airbench94): BatchNorm networks, SGD with
Nesterov momentum, a linear warm-up / linear decay ("one-cycle") learning rate, label smoothing, flip +
translate augmentation, bf16 autocast (this CPU has AVX512-BF16), channels_last, flip test-time augmentation.
With ``--max-time`` the schedule runs on wall time: the learning rate reaches 0 when the budget is spent,
so a run that is cut short still ends annealed.

    OMP_NUM_THREADS=1 python benchmarks/classifier_train.py mnist-cnn --data ../shared/data/mnist.npz \
        --out runs/mnist-cnn --epochs 4
    OMP_NUM_THREADS=1 python benchmarks/classifier_train.py cifar10-resnet --data ../shared/data/cifar10_jpeg.npz \
        --out runs/cifar10-resnet --epochs 12 --max-time 50

Writes OUT/model.safetensors (a `classifier` file, fp16 weights with --fp16) and prints one JSON line with
the test accuracy. Copy the file to dlkit/zoo/<name>.safetensors to bundle it. The bundled CIFAR-10 model
`cifar10-airbench` comes from the full airbench recipe instead: `dlkit classifier-train` (see its card).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

from dlkit.core.runtime import make_runtime
from dlkit.nets.classifiers import build_classifier, count_parameters
from dlkit.vision.classifier import Classifier, evaluate, flip_translate, save_classifier, train_epoch
from dlkit.vision.datasets import load_dataset

RECIPES = {
    # name: dataset, arch, arch kwargs, batch, peak lr, weight decay, label smoothing, flip, translate, tta
    "mnist-cnn": dict(dataset="mnist", arch="mnist-cnn", arch_kwargs={"width": 32}, batch=128, lr=0.05, wd=5e-4,
                      smoothing=0.1, flip=False, pad=2, tta=False),
    "cifar10-resnet": dict(dataset="cifar10", arch="resnet", arch_kwargs={"widths": [32, 64, 128], "stem": 24},
                           batch=256,
                           lr=0.2, wd=5e-4, smoothing=0.2, flip=True, pad=2, tta=True),
}


def lr_at(progress: float, peak: float, warmup: float = 0.2) -> float:
    """Triangular schedule: 0.1*peak -> peak over the first ``warmup`` of training, then linearly to 0."""
    if progress < warmup:
        return peak * (0.1 + 0.9 * progress / warmup)
    return peak * max(0.0, 1.0 - progress) / (1.0 - warmup)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-time", type=float, default=None, help="minutes; the LR schedule follows wall time")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fp16", action="store_true", help="store fp16 weights (bundled models)")
    ap.add_argument("--subset", type=int, default=0, help="train on the first N shuffled images (timing runs)")
    ap.add_argument("--steps", type=int, default=0, help="stop after N steps (timing runs)")
    ap.add_argument("--init", default=None, help="start from this classifier file (a second cycle)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    args = ap.parse_args(argv)
    r = RECIPES[args.recipe]
    rt = make_runtime("auto", args.precision, args.seed, threads=args.threads)
    train, test = load_dataset(r["dataset"], "train", args.data), load_dataset(r["dataset"], "test", args.data)
    if args.subset:
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:args.subset]
        train = train.subset(keep)
    x = train.images.float() / 255
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).tolist()
    del x
    c, h, w = train.shape
    net = build_classifier(r["arch"], c, len(train.classes), h, **r["arch_kwargs"])
    model = Classifier(net, arch=r["arch"], classes=train.classes, input_size=(c, h, w), mean=mean, std=std,
                       arch_kwargs=r["arch_kwargs"]).to(rt.device)
    if args.init:
        from dlkit.vision.classifier import load_classifier

        model.net.load_state_dict(load_classifier(args.init).net.state_dict())
    if args.lr:
        r = {**r, "lr": args.lr}
    model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.dim() > 1]
    rest = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": r["wd"]}, {"params": rest, "weight_decay": 0.0}],
                          lr=r["lr"], momentum=0.9, nesterov=True)
    steps_per_epoch = len(train) // r["batch"]
    total = args.steps or steps_per_epoch * args.epochs
    budget = args.max_time * 60 if args.max_time else None
    t0 = time.perf_counter()
    progress = {"p": 0.0}

    def schedule(step: int) -> float:
        p = step / total
        if budget:
            p = max(p, (time.perf_counter() - t0) / budget)
        progress["p"] = p
        return lr_at(min(p, 1.0), r["lr"])

    def on_step(step: int, loss) -> bool:
        if loss is not None:
            print(f"step {step}/{total} loss {loss:.4f} lr {schedule(step):.4f} "
                  f"{time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        return step >= total or progress["p"] >= 1.0

    gen = torch.Generator().manual_seed(args.seed)
    augment = partial(flip_translate, flip=r["flip"], pad=r["pad"])
    step, epoch, seen = 0, 0, 0
    while step < total and progress["p"] < 1.0:
        res = train_epoch(model, train.images, train.labels, opt, rt, batch_size=r["batch"], generator=gen,
                          augment=augment, lr_at=schedule, step=step, label_smoothing=r["smoothing"],
                          log_every=50, on_step=on_step, channels_last=True)
        step += res.steps
        seen += res.images
        epoch += 1
        # a fifth of the test set (strided: the file is sorted by class), no TTA, to keep the epochs cheap
        _, test_acc = evaluate(model, test.images[::5], test.labels[::5], rt, channels_last=True)
        print(f"epoch {epoch} step {step} train loss {res.loss:.4f} acc {res.accuracy:.4f} | test[::5] acc {test_acc:.4f} "
              f"| {res.images / res.seconds:.0f} img/s | {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    test_loss, test_acc = evaluate(model, test.images, test.labels, rt, tta=r["tta"], channels_last=True)
    _, plain_acc = evaluate(model, test.images, test.labels, rt, tta=False, channels_last=True)
    metrics = {"test_accuracy": round(test_acc, 4), "test_accuracy_no_tta": round(plain_acc, 4),
               "test_loss": round(test_loss, 4), "tta": r["tta"]}
    recipe = {"command": "python benchmarks/classifier_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
              **{k: v for k, v in r.items() if k != "arch_kwargs"}, "optimizer": "SGD nesterov 0.9",
              "schedule": "triangular (warm-up 20%, linear to 0)", "precision": rt.precision, "epochs": epoch,
              "steps": step, "seconds": round(seconds), "threads": args.threads,
              "hardware": "2-core x86-64 CPU (AMD EPYC, AVX512-BF16), 1 thread, shared machine"}
    args.out.mkdir(parents=True, exist_ok=True)
    dataset_desc = {"mnist": "MNIST (mnist.npz)", "cifar10": "CIFAR-10, lossy JPEG copy (cifar10_jpeg.npz)"}
    path = save_classifier(args.out / "model.safetensors", model, arch=r["arch"], arch_kwargs=r["arch_kwargs"],
                           classes=train.classes, input_size=(c, h, w), mean=mean, std=std, metrics=metrics,
                           recipe=recipe, training={"data": dataset_desc[r["dataset"]], "images_seen": seen},
                           headline=f"test accuracy {100 * test_acc:.2f}%",
                           dtype=torch.float16 if args.fp16 else None)
    print(json.dumps({"recipe": args.recipe, "model": str(path), "parameters": count_parameters(net),
                      "epochs": epoch, "steps": step, "seconds": round(seconds, 1),
                      "images_per_s": round(seen / seconds, 1), **metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
