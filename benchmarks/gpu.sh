#!/usr/bin/env bash
# VGG-16 at 224x224 on an NVIDIA GPU: bfloat16 train-step and inference throughput and
# model-FLOPs utilisation (MFU) against the chip's dense bf16 peak. Runs in 2-4 minutes.
#
#   benchmarks/gpu.sh                  # needs a venv with jax[cuda12] (see below)
#   PEAK_TFLOPS=989 benchmarks/gpu.sh  # override the peak if the GPU is not in the table
#
# Set-up on the GPU machine (once): python3 -m venv .venv && .venv/bin/pip install -e . 'jax[cuda12]'
# MFU = achieved model FLOP/s / peak, where model FLOPs come from `vggjax summary`'s MACs
# (2 FLOPs per MAC; a train step counts 3x the forward pass) and the peak is NVIDIA's dense
# (no sparsity) bf16 tensor-core figure for the detected chip.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
BATCH=${BATCH:-128}
OUT=${OUT:-benchmarks/gpu-results.json}

name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
if [[ -z "${PEAK_TFLOPS:-}" ]]; then
  case "$name" in
    *H200*|*H100*SXM*|*"H100 80GB HBM3"*) PEAK_TFLOPS=989 ;;
    *H100*) PEAK_TFLOPS=756 ;;                      # H100 PCIe
    *A100*) PEAK_TFLOPS=312 ;;
    *L40S*) PEAK_TFLOPS=362 ;;
    *A10*) PEAK_TFLOPS=125 ;;
    *L4*) PEAK_TFLOPS=121 ;;
    *T4*) PEAK_TFLOPS=65 ;;                         # fp16; T4 has no bf16 tensor cores
    *) echo "unknown GPU '$name': set PEAK_TFLOPS to its dense bf16 peak" >&2; exit 2 ;;
  esac
fi
echo "$name, dense bf16 peak $PEAK_TFLOPS TFLOP/s, $(date -u +%Y-%m-%dT%H:%MZ)"

"$BIN/python" -c 'import jax; assert jax.default_backend() == "gpu", jax.devices(); print(jax.devices()[0])'
timeout 280 "$BIN/vggjax" bench --arch vgg16 --width 1 --image-size 224 --channels 3 \
  --num-classes 1000 --batch-size "$BATCH" --dtype bfloat16 --impl auto --source-size 224 \
  --steps 10 --repeats 5 --json > "$OUT"
"$BIN/python" - "$OUT" "$PEAK_TFLOPS" <<'PY'
import json, sys
report, peak = json.load(open(sys.argv[1])), float(sys.argv[2]) * 1e3
print(f"matmul peak measured by the bench: {report['matmul_peak_gflops'] / 1e3:.0f} TFLOP/s (bf16 2048^2)")
for mode in ("train", "inference"):
    r = report[mode]
    print(f"{mode:<9} {r['images_per_s']:8.0f} images/s  {r['gflops'] / 1e3:6.1f} TFLOP/s  "
          f"MFU {100 * r['gflops'] / peak:4.1f}%  compile {r['compile_s']:.0f} s")
mem = report["memory"]
print(f"device peak memory {mem.get('device_peak', 0) / 2**30:.1f} GiB")
PY
