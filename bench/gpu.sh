#!/usr/bin/env bash
# The GPU measurements of issue #4 as one prepared run (a few minutes on one H100/H200 class GPU).
#
#   bash bench/gpu.sh PATH/TO/cifar10-jpeg.tar.gz [OUT_DIR]
#
# Unpacks the image-folder copy, then runs bench/throughput.py (real path vs compute vs loader,
# no CPU baseline) for ResNet-18/50/20/56 at bf16 + channels_last: eager at each batch size, and
# --compile at the largest (compiling takes about a minute a model); then the eager precision
# matrix for ResNet-18. Output (logs and throughput.jsonl) goes to OUT_DIR.
# DEVICE=cpu STEPS=1 ROUNDS=1 MODELS=resnet20 BATCHES=32 MATRIX_MODEL=resnet20 is a CPU dry run.
set -euo pipefail
tarball=${1:?usage: bench/gpu.sh CIFAR10_TARBALL [OUT_DIR]}
out=${2:-bench-gpu-out}
device=${DEVICE:-cuda}
steps=${STEPS:-30}
rounds=${ROUNDS:-3}
models=${MODELS:-resnet18 resnet50 resnet20 resnet56}
batches=${BATCHES:-128 512}
data=$(mktemp -d)
mkdir -p "$out"
tar xzf "$tarball" -C "$data"
cd "$(dirname "$0")/.."
{ date -u +%Y-%m-%dT%H:%M:%SZ; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true; python -c "import torch; print('torch', torch.__version__)"; } | tee "$out/machine.txt"
for model in $models; do
  for batch in $batches; do
    python bench/throughput.py --model "$model" --data-dir "$data" --device "$device" --no-classic \
      --batch-size "$batch" --steps "$steps" --rounds "$rounds" --warmup 3 | tee -a "$out/throughput.log"
  done
  python bench/throughput.py --model "$model" --data-dir "$data" --device "$device" --no-classic \
    --batch-size "$batch" --steps "$steps" --rounds "$rounds" --warmup 3 --compile | tee -a "$out/throughput.log"
done
python bench/precision_matrix.py --model "${MATRIX_MODEL:-resnet18}" --device "$device" --steps "$steps" --rounds "$rounds" \
  --precisions fp32 bf16 fp16 | tee "$out/precision_matrix.log"
grep -h '^{' "$out/throughput.log" > "$out/throughput.jsonl"
