#!/usr/bin/env bash
# airbench94's routes in this trainer (--recipe airbench94, and airbench94-muon at its own 8 epochs)
# against the published script run on the same machine, one after the other (never at once: two
# torch processes on 2 cores slow each other tenfold):
#
#   bash bench/airbench_vs_peer.sh PEER_SCRIPT DATA_DIR OUT_DIR [EPOCHS] [SEEDS]
#
# PEER_SCRIPT: a CPU port of KellerJordan/cifar10-airbench's airbench94.py taking `DATA_DIR EPOCHS
# RUNS` (it is not part of this project); DATA_DIR holds cifar-10-batches-py/ (both read the same
# files); EPOCHS (the peer's and --recipe airbench94's) defaults to the published 9.9, SEEDS to "0".
# Each command runs under /usr/bin/time; OUT_DIR gets peer-<seed>.log, ours-<seed>.log,
# muon-<seed>.log and the runs' folders.
set -euo pipefail
peer=$1 data=$2 out=$3 epochs=${4:-9.9} seeds=${5:-0}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for seed in $seeds; do
  /usr/bin/time -f "wall %e s" python "$peer" "$data" "$epochs" 1 > "$out/peer-$seed.log" 2>&1
  length=()
  if [ "$epochs" != "9.9" ]; then length=(--epochs "$epochs"); fi
  /usr/bin/time -f "wall %e s" python "$here/main.py" --model airbench94 --recipe airbench94 "${length[@]}" \
    --seed "$seed" --data-dir "$data" --no-download --run-dir "$out/ours-$seed" --quiet \
    > "$out/ours-$seed.log" 2>&1
  /usr/bin/time -f "wall %e s" python "$here/main.py" --model airbench94 --recipe airbench94-muon \
    --seed "$seed" --data-dir "$data" --no-download --run-dir "$out/muon-$seed" --quiet \
    > "$out/muon-$seed.log" 2>&1
  tail -2 "$out/peer-$seed.log"
  grep -E "^(done|time):" "$out/ours-$seed.log" "$out/muon-$seed.log"
done
