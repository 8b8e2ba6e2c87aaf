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
# translation (issue 3): Transformer training throughput and time to the target BLEU on Multi30k en-de
#   mkdir -p .data/multi30k && cp ../shared/data/multi30k/{train,val,test_2016_flickr}.{en,de}.gz .data/multi30k/
if [ -d .data/multi30k ]; then
  python3 -m dlkit translate-train --data .data/multi30k --pair en-de --arch transformer --preset small \
      --vocab-size 5000 --max-tokens 8000 --lr 1.5e-3 --warmup 400 --epochs 40 --patience 0 --average-last 3 \
      --precision bf16 --max-time "${MT_MIN:-4}" --save-dtype fp16 --out "$OUT/mt-en-de" --json \
      > "$OUT/mt-events.jsonl" 2> "$OUT/mt-log.txt"
  tail -3 "$OUT/mt-log.txt"
  python3 benchmarks/translate_speed.py --model "$OUT/mt-en-de/model.safetensors" --data .data/multi30k \
      --pair en-de --single 100 --e2e-runs 1 --device cuda --precision bf16 > "$OUT/mt-speed.json" 2>&1
  rm -rf "$OUT"/mt-en-de/model.state.pt "$OUT"/mt-en-de/snapshots
fi
# super-resolution (issue 4): output megapixels/s in bf16
python3 benchmarks/superres_speed.py --model srresnet-x4 > "$OUT/sr-speed.json" 2>&1
tail -3 "$OUT/sr-speed.json"
