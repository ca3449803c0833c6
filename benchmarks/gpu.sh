#!/usr/bin/env bash
# dvd bench on a CUDA GPU: the 1.3B model (random weights, no download) with the fast path off and on, and a
# 30-second 720p synthetic clip end to end; prints one table. Run from the repository root with dvd installed:
#   bash benchmarks/gpu.sh                # JSON of every run lands in $OUT (default: a temporary folder)
# Fast path = folded cross-attention (the default) + regional torch.compile + cuDNN attention; "off" is
# --no-fold with eager diffusers attention. A run that fails prints its one-line error and the table goes on.
set -uo pipefail

OUT=${OUT:-$(mktemp -d -t dvd-gpu-bench-XXXX)}
FULL=(--preset 1.3b --dtype bfloat16 --device cuda --height 480 --width 640 --window 81 --overlap 21)
FAST=(--compile --attention-backend _native_cudnn)

run() {  # name, then dvd bench flags
  local name=$1
  shift
  echo "== $name: dvd bench $*" >&2
  dvd bench "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err" || { tail -n 1 "$OUT/$name.err" >&2; rm -f "$OUT/$name.json"; }
}

run fast-path-off "${FULL[@]}" --frames 162 --no-fold
run fold-only "${FULL[@]}" --frames 162
run fast-path-on "${FULL[@]}" --frames 162 "${FAST[@]}"
run 720p-30s-on "${FULL[@]}" "${FAST[@]}" --source-height 720 --source-width 1280 --frames 720

python - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'run':<16} {'frames/s':>9} {'DiT TFLOP/s':>12} {'VAE enc TFLOP/s':>16} {'VAE dec TFLOP/s':>16} {'peak GPU GiB':>13}")
for name in ["fast-path-off", "fold-only", "fast-path-on", "720p-30s-on"]:
    path = out / f"{name}.json"
    if not path.exists():
        print(f"{name:<16} failed: see {out / (name + '.err')}")
        continue
    r = json.loads(path.read_text())
    rate = {k: (v or 0) / 1e12 for k, v in r["flops_per_second"].items()}
    peak = (r["peak_device_bytes"] or 0) / 2**30
    print(
        f"{name:<16} {r['fps']:9.2f} {rate['dit']:12.1f} {rate['vae_encode']:16.1f} {rate['vae_decode']:16.1f} "
        f"{peak:13.2f}"
    )
print(f"(every figure of every run: the JSON files in {out})")
EOF
