#!/bin/bash
# The robust MNIST model, one phase per call: its training (in --max-time chunks: call `train` again to resume),
# its evaluation on the full test set (the bar: PGD-40, step 0.01, 10 restarts at eps 0.3), the side-by-side
# table with the standard mnist-cnn (FGSM and PGD-40 at eps 0.1-0.3, full test set), the fp16 check and the
# bundle + card. Run it alone on the machine (one heavy job at a time), from the repository root:
#
#   export DATA=path/to/mnist.npz
#   for p in train eval table table-std fp16 bundle; do bash benchmarks/adv_mnist_robust.sh $p >> runs/mnist-robust.log 2>&1; done
#
# benchmarks/adv_bundle.py reads the log's `== PHASE` blocks (CPU time, wall time, load averages).
set -u
D=${DATA:?set DATA to mnist.npz}
RUN=${RUN:-runs/mnist-robust}
CHUNK=${CHUNK:-1200}  # seconds of training per call
# the recipe: fast FGSM training from a random start (Wong et al. 2020, step 1.25 eps, cyclic learning rate) on
# cnn-small widened to 64/128 filters, eps warmed up linearly over the first 3 of 15 epochs
RECIPE="--method fgsm-rs --arch cnn-small --width 64 --epochs 15 --eps-warmup 3 --batch-size 100"
COMMON="--threads 2 --precision fp32"
TABLE="--method fgsm,pgd --eps 0,0.1,0.2,0.3 --steps 40 --restarts 1 --batch-size 1000 $COMMON --json"
phase=${1:?phase: train, eval, table, table-std, fp16 or bundle}
echo "== $phase $(date -u +%FT%TZ) | $(uptime)"
case $phase in
train)
    resume=""; [ -f "$RUN/state.pt" ] && resume="--resume"
    echo "dlkit adv-train --data mnist.npz $RECIPE $COMMON --save-dtype fp16 --out $RUN" > "$RUN.cmd"
    /usr/bin/time -v python -m dlkit adv-train --data "$D" $RECIPE $COMMON --save-dtype fp16 --max-time "$CHUNK" \
        --out "$RUN" $resume --json >> "$RUN.train.jsonl" ;;
eval)
    /usr/bin/time -v python -m dlkit adv-attack -m "$RUN/model.safetensors" --dataset mnist --data "$D" --method pgd \
        --eps 0,0.3 --steps 40 --step-size 0.01 --restarts 10 --batch-size 1000 $COMMON --json > "$RUN.eval.jsonl" ;;
table)  # the robust model's column; table-std: the standard model's (it does not depend on the run)
    /usr/bin/time -v python -m dlkit adv-attack -m "$RUN/model.safetensors" --dataset mnist --data "$D" $TABLE \
        > "$RUN.table.jsonl" ;;
table-std)
    /usr/bin/time -v python -m dlkit adv-attack -m mnist-cnn --dataset mnist --data "$D" $TABLE > "$RUN.table-std.jsonl" ;;
fp16)
    python benchmarks/adv_bundle.py "$RUN" --check-fp16 --data "$D" ;;
bundle)
    python benchmarks/adv_bundle.py "$RUN" --section ;;
*)
    echo "unknown phase $phase"; exit 2 ;;
esac
rc=$?
echo "-- end $phase rc=$rc $(date -u +%FT%TZ) | $(uptime)"
exit $rc
