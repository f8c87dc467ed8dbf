#!/usr/bin/env bash
# The GPU speed measurements as one prepared run (about 6-8 minutes on one H100/H200 class GPU).
#
#   bash bench/gpu.sh PATH/TO/cifar10-jpeg.tar.gz OUT_DIR [gpu_suite.py options]
#   bash bench/gpu.sh UNPACKED_FOLDER OUT_DIR [gpu_suite.py options]
#
# Unpacks the image-folder copy into a temporary folder, records the machine, then runs
# bench/gpu_suite.py (see its docstring for the stages); OUT_DIR gets machine.txt, suite.log,
# results.jsonl and table.md.
# With DDP=1 it first compares the plain run with DDP over one NCCL process (~1.5 minutes:
# bench/ddp_throughput.py, ResNet-18 at batch 512), written to OUT_DIR/ddp.log.
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
if [ -d "$tarball" ]; then  # an unpacked copy (its image-folder cache is reused)
  data=$(cd "$tarball" && pwd)
else
  data=$(mktemp -d)
  tar xzf "$tarball" -C "$data"
fi
cd "$(dirname "$0")/.."
{ date -u +%Y-%m-%dT%H:%M:%SZ; nproc; command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"; } | tee "$out/machine.txt"
if [ "${DDP:-0}" = 1 ]; then
  device=cuda; case " $* " in *" --device cpu "*) device=cpu;; esac
  "$python" bench/ddp_throughput.py --data-dir "$data" --device "$device" --processes 1 --model resnet18 \
    --batch-size 512 --steps 30 --warmup 5 --rounds 2 2>&1 | tee "$out/ddp.log"
fi
PYTHONUNBUFFERED=1 "$python" bench/gpu_suite.py --data-dir "$data" --out "$out" "$@" 2>&1 | tee "$out/suite.log"
