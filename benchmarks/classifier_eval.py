"""Test accuracy of a classifier file (bundled NAME or path) on MNIST / CIFAR-10, as the model cards report it.

    OMP_NUM_THREADS=1 python benchmarks/classifier_eval.py mnist-cnn --dataset mnist --data ../shared/data/mnist.npz
    OMP_NUM_THREADS=1 python benchmarks/classifier_eval.py cifar10-resnet --dataset cifar10 \
        --data ../shared/data/cifar10_jpeg.npz --tta
"""

from __future__ import annotations

import argparse
import json
import time

from dlkit.core.runtime import make_runtime
from dlkit.vision.classifier import evaluate, load_classifier
from dlkit.vision.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tta", action="store_true", help="also report horizontal-flip test-time augmentation")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    rt = make_runtime("auto", args.precision, 0, distributed=False, threads=args.threads)
    clf = load_classifier(args.model, rt.device)
    test = load_dataset(args.dataset, "test", args.data)
    t = time.perf_counter()
    loss, acc = evaluate(clf, test.images, test.labels, rt)
    out = {"model": args.model, "dataset": args.dataset, "images": len(test), "test_accuracy": round(acc, 4),
           "test_loss": round(loss, 4), "precision": rt.precision}
    if args.tta:
        out["test_accuracy_flip_tta"] = round(evaluate(clf, test.images, test.labels, rt, tta=True)[1], 4)
    out["seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
