#!/bin/bash
# The robust MNIST model: training (adv-train fgsm-rs), its evaluation on the full test set, the side-by-side
# table with mnist-cnn, and the bundle + card + RESULTS.md section when it meets the bar. Run it alone on the
# machine (one heavy job at a time), from the repository root:
#
#   DATA=path/to/mnist.npz bash benchmarks/adv_mnist_robust.sh [--resume]    > runs/mnist-robust.log 2>&1
#
# About 20 min of training and 40 min of evaluation on 2 threads of a 2-core CPU (cnn-small width 32).
set -u
D=${DATA:?set DATA to mnist.npz}
echo "start $(date -u) | $(uptime)"
if [ -f runs/mnist-robust/model.safetensors ] && [ "${1:-}" != "--resume" ]; then echo "model exists"; else
/usr/bin/time -v python -m dlkit adv-train --data "$D" --method fgsm-rs --arch cnn-small --width 32 --epochs 10 \
    --batch-size 100 --threads 2 --precision fp32 --save-dtype fp16 --max-time 30 --out runs/mnist-robust ${1:-} --json \
    > runs/mnist-robust.train.jsonl
echo "train rc=$? $(date -u) | $(uptime)"
fi
# the bar: PGD-40 (step 0.01) with 10 restarts at eps 0.3 on the full test set
/usr/bin/time -v python -m dlkit adv-attack --model runs/mnist-robust/model.safetensors --dataset mnist --data "$D" \
    --method pgd --eps 0,0.3 --steps 40 --step-size 0.01 --restarts 10 --batch-size 1000 --threads 2 --json \
    > runs/mnist-robust.eval.jsonl
echo "eval rc=$? $(date -u) | $(uptime)"
# side by side with the standard model: FGSM, PGD-40, PGD-100, APGD-CE (one restart) on 500 test images
python -m dlkit adv-attack -m mnist-cnn -m runs/mnist-robust/model.safetensors --dataset mnist --data "$D" \
    --robustness --restarts 1 --limit 500 --per-class 50 --batch-size 500 --threads 2 --json \
    > runs/mnist-robust.table.jsonl
echo "table rc=$? $(date -u) | $(uptime)"
python benchmarks/adv_bundle.py runs/mnist-robust --results benchmarks/RESULTS.md
echo "bundle rc=$? $(date -u)"
