#!/usr/bin/env bash
# One GPU session's checks (issue 2, sections 6-7): GPU tests, the baby-GPT run on Tiny Shakespeare
# (bf16, compiled, batch 64), and its throughput. Copy the data first (it does not travel by itself):
#   mkdir -p .data && cp ../shared/data/tinyshakespeare/input.txt .data/   (.data/ is git-ignored; carry it)
# Run on the device with carry [".data"]; results and the model come back through $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/dlkit-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps -e . >/dev/null 2>&1 || python3 -m pip install -q -e .
python3 -m dlkit doctor | tee "$OUT/doctor.txt"
python3 -m pytest -q -m gpu tests 2>&1 | tail -5 | tee "$OUT/gpu-tests.txt"
# nanoGPT shakespeare_char: 6 layers, 6 heads, d=384, context 256, dropout 0.2, batch 64, lr 1e-3, 5000 iters max
python3 -m dlkit lm-train --data .data/input.txt --preset baby --batch-size 64 --steps 5000 --lr 1e-3 --min-lr 1e-4 \
    --warmup 100 --eval-every 250 --eval-iters 200 --compile --precision bf16 --max-time "${MAX_MIN:-6}" \
    --save-dtype fp16 --out "$OUT/baby" --json > "$OUT/baby-events.jsonl" 2> "$OUT/baby-log.txt"
tail -5 "$OUT/baby-log.txt"
rm -f "$OUT"/baby/tokens*.bin "$OUT"/baby/model.state.pt
