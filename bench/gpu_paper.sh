#!/usr/bin/env bash
# The paper run on a GPU reached through calls of limited length: `--recipe paper --model resnet20` (64k iterations,
# ~11 minutes of training on one H200, more than one 10-minute call), resumable across calls.
#
#   bash bench/gpu_paper.sh CIFAR10_TARBALL_OR_FOLDER RUN_DIR OUT_DIR [LIMIT_S]
#
# Starts the run in RUN_DIR, or resumes RUN_DIR/last.pt when there is one, and stops it after
# LIMIT_S seconds (default 540) with SIGTERM, on which main.py saves a resumable checkpoint at the
# step it reached (the resumed run equals an uninterrupted one). Then copies RUN_DIR to OUT_DIR.
# Call it again with the same RUN_DIR to go on; a finished run says so.
# SEED (default 1: the 2-core CPU runs seed 0) and PAPER_ARGS (more main.py options) choose the run.
# CPU dry run on the tests' synthetic batches (stopped after 8 s, then finished):
#   PAPER_ARGS="--device cpu --iterations 40 --batch-size 32" bash bench/gpu_paper.sh DATA_FOLDER runs/paper OUT 8
#   bash bench/gpu_paper.sh DATA_FOLDER runs/paper OUT 120
set -uo pipefail
source=${1:?usage: bench/gpu_paper.sh CIFAR10_TARBALL_OR_FOLDER RUN_DIR OUT_DIR [LIMIT_S]}
run_dir=${2:?usage: bench/gpu_paper.sh CIFAR10_TARBALL_OR_FOLDER RUN_DIR OUT_DIR [LIMIT_S]}
out=${3:?usage: bench/gpu_paper.sh CIFAR10_TARBALL_OR_FOLDER RUN_DIR OUT_DIR [LIMIT_S]}
limit=${4:-540}
python=${PYTHON:-python3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
mkdir -p "$(dirname "$run_dir")"
run_dir=$(cd "$(dirname "$run_dir")" && pwd)/$(basename "$run_dir")
cd "$(dirname "$0")/.."
if [ -d "$source" ]; then data=$(cd "$source" && pwd); else data=$(mktemp -d); tar xzf "$source" -C "$data"; fi
{ date -u +%Y-%m-%dT%H:%M:%SZ; git rev-parse --short HEAD 2>/dev/null || true
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true; } \
  | tee -a "$out/paper.log"
if [ -f "$run_dir/last.pt" ]; then
  command=("$python" main.py --resume "$run_dir/last.pt" --data-dir "$data" --quiet)
else
  # shellcheck disable=SC2206  # PAPER_ARGS is a word list
  command=("$python" main.py --mode train --recipe paper --model resnet20 --seed "${SEED:-1}" --eval-every 4
           --data-dir "$data" --no-download --run-dir "$run_dir" --quiet ${PAPER_ARGS:-})
fi
echo "\$ ${command[*]}" | tee -a "$out/paper.log"
PYTHONUNBUFFERED=1 timeout --preserve-status -s TERM -k 60 "$limit" "${command[@]}" 2>&1 | tee -a "$out/paper.log"
code=${PIPESTATUS[0]}
echo "exit $code after $SECONDS s (143: stopped by the time limit with a resumable checkpoint)" | tee -a "$out/paper.log"
cp -r "$run_dir" "$out/"
