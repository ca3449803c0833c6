#!/usr/bin/env bash
# dvd bench on a CUDA GPU: the 1.3B model (random weights, no download) at 480x640, window 81, overlap 21, bf16,
# 162 frames (two windows), with the fast path off, in parts and on; the VAE switches; the tiled VAE's memory; and
# a 30-second 720p synthetic clip end to end. Prints one table. Run from the repository root with dvd installed:
#   bash benchmarks/gpu.sh                  # the JSON of every run lands in $OUT (default: a temporary folder)
# A run that fails prints its one-line error and the table goes on. MODEL, SIZE, FRAMES, LONG and FAST override the
# settings (e.g. a CPU smoke test of the script itself: MODEL="--preset tiny --device cpu --dtype float32"
# SIZE="--height 32 --width 48 --window 9 --overlap 2" FRAMES=12 LONG="--frames 24" FAST="--compile").
#   off            the reference: diffusers' cross-attention over 512 zero tokens, time conditions every call
#   fold           the default fast path: folded cross-attention + time conditions computed once
#   on             fold + regional torch.compile of the DiT blocks + cuDNN attention (compiled in an untimed
#                  warm-up run)
#   on+vae-layout  on + channels-last VAE + cudnn.benchmark
#   fold+tiled     fold with the tiled VAE (its peak memory against `fold`'s)
#   720p-30s       on, a 1280x720 synthetic clip of 720 frames (30 s at 24 fps) resized to 480x864
set -uo pipefail

OUT=${OUT:-$(mktemp -d -t dvd-gpu-bench-XXXX)}
mkdir -p "$OUT"
read -r -a MODEL <<<"${MODEL:---preset 1.3b --dtype bfloat16 --device cuda}"
read -r -a SIZE <<<"${SIZE:---height 480 --width 640 --window 81 --overlap 21}"
read -r -a FAST <<<"${FAST:---compile --attention-backend _native_cudnn}"
read -r -a LONG <<<"${LONG:---source-height 720 --source-width 1280 --frames 720}"
FRAMES=${FRAMES:-162}
RUNS=(off fold on on+vae-layout fold+tiled 720p-30s)

run() { # name, then dvd bench flags
  local name=$1
  shift
  echo "== $name: dvd bench $*" >&2
  if ! dvd bench "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err"; then
    tail -n 1 "$OUT/$name.err" >&2
    rm -f "$OUT/$name.json"
  fi
}

run off "${MODEL[@]}" "${SIZE[@]}" --frames "$FRAMES" --no-fold --no-precompute-time
run fold "${MODEL[@]}" "${SIZE[@]}" --frames "$FRAMES"
run on "${MODEL[@]}" "${SIZE[@]}" --frames "$FRAMES" "${FAST[@]}"
run on+vae-layout "${MODEL[@]}" "${SIZE[@]}" --frames "$FRAMES" "${FAST[@]}" --channels-last --cudnn-benchmark
run fold+tiled "${MODEL[@]}" "${SIZE[@]}" --frames "$FRAMES" --tiled-vae
run 720p-30s "${MODEL[@]}" "${SIZE[@]}" "${FAST[@]}" "${LONG[@]}"

python - "$OUT" "${RUNS[@]}" <<'EOF'
import json
import sys
from pathlib import Path

out, runs = Path(sys.argv[1]), sys.argv[2:]
print(
    f"{'run':<14} {'frames/s':>9} {'DiT s/win':>10} {'DiT TFLOP/s':>12} {'VAE enc TFLOP/s':>16} "
    f"{'VAE dec TFLOP/s':>16} {'peak GPU GiB':>13}"
)
device = None
for name in runs:
    path = out / f"{name}.json"
    if not path.exists():
        print(f"{name:<14} failed: see {out / (name + '.err')}")
        continue
    r = json.loads(path.read_text())
    device = device or r["device"]
    rate = {k: (v or 0) / 1e12 for k, v in r["flops_per_second"].items()}
    peak = "n/a" if r["peak_device_bytes"] is None else f"{r['peak_device_bytes'] / 2**30:.2f}"
    print(
        f"{name:<14} {r['fps']:9.2f} {r['stages']['dit']:10.4f} {rate['dit']:12.1f} {rate['vae_encode']:16.1f} "
        f"{rate['vae_decode']:16.1f} {peak:>13}"
    )
try:
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU"
except ImportError:
    card = "torch missing"
print(f"(device {device}, card: {card}; every figure of every run: the JSON files in {out})")
EOF
