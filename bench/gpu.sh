#!/usr/bin/env bash
# The GPU measurements of issue #4 as one prepared run (about 6-8 minutes on one H100/H200 class GPU).
#
#   bash bench/gpu.sh PATH/TO/cifar10-jpeg.tar.gz OUT_DIR [gpu_suite.py options]
#
# Unpacks the image-folder copy into a temporary folder, records the machine, then runs
# bench/gpu_suite.py (see its docstring for the stages); OUT_DIR gets machine.txt, suite.log,
# results.jsonl and table.md.
# CPU dry run: bash bench/gpu.sh TARBALL OUT --device cpu --r18-batches 32 --models resnet20 \
#   --batches 32 --compile-models resnet20 --compile-batch 32 --matrix-model resnet20 --matrix-batch 32 \
#   --steps 2 --rounds 1
set -euo pipefail
tarball=${1:?usage: bench/gpu.sh CIFAR10_TARBALL OUT_DIR [gpu_suite.py options]}
out=${2:?usage: bench/gpu.sh CIFAR10_TARBALL OUT_DIR [gpu_suite.py options]}
shift 2
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
data=$(mktemp -d)
tar xzf "$tarball" -C "$data"
cd "$(dirname "$0")/.."
{ date -u +%Y-%m-%dT%H:%M:%SZ; nproc; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } | tee "$out/machine.txt"
PYTHONUNBUFFERED=1 "$python" bench/gpu_suite.py --data-dir "$data" --out "$out" "$@" 2>&1 | tee "$out/suite.log"
