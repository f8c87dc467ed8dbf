#!/usr/bin/env bash
# A time budget with the route left to the trainer, against the published scripts cut to the same
# seconds, one after the other (never at once: two torch processes on 2 cores slow each other):
#
#   bash bench/budget_vs_peers.sh BUDGET DATA_DIR OUT_DIR
#
# The trainer goes first, after a --dry-run that times the routes (so the run reads their costs from
# the cache, as a user's second command would). Then `bench/peer.py speedrun` and `bench/peer.py
# airbench94` with --epochs chosen so that each script's timed seconds (whitening, training, TTA)
# equal the trainer's training + evaluation seconds T (its timings.json): E = (T - FIXED) / EPOCH_S,
# from each script's seconds an epoch and fixed seconds on your CPU. The defaults were
# measured on a 2-core AMD EPYC with AVX512-BF16 (bench/README.md); on another machine set
# RECORD_EPOCH_S, RECORD_FIXED_S, AIRBENCH_EPOCH_S and AIRBENCH_FIXED_S from one short run of each.
# RECORD_SOURCE and AIRBENCH_SOURCE: copies of the scripts at their pinned commits (else downloaded).
# OUT_DIR gets dry-run.json, auto.log, speedrun.log, airbench94.log, lengths and the runs' folders.
set -euo pipefail
budget=$1 data=$2 out=$3
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
python "$here/main.py" --time-budget "$budget" --data-dir "$data" --no-download --dry-run > "$out/dry-run.json"
/usr/bin/time -f "wall %e s" python "$here/main.py" --time-budget "$budget" --data-dir "$data" --no-download \
  --run-dir "$out/auto" --quiet > "$out/auto.log" 2>&1
seconds=$(python -c "import json; t = json.load(open('$out/auto/timings.json')); print(t['training_s'] + t['evaluation_s'])")
epochs() { python -c "print(round(($seconds - $1) / $2, 2))"; }
record=$(epochs "${RECORD_FIXED_S:-11}" "${RECORD_EPOCH_S:-122}")
airbench=$(epochs "${AIRBENCH_FIXED_S:-43.6}" "${AIRBENCH_EPOCH_S:-98.5}")
source_of() { if [ -n "${1:-}" ]; then echo "--source $1"; fi; }
# shellcheck disable=SC2046
/usr/bin/time -f "wall %e s" python "$here/bench/peer.py" speedrun "$data" --epochs "$record" --work "$out/peer" \
  $(source_of "${RECORD_SOURCE:-}") > "$out/speedrun.log" 2>&1
# shellcheck disable=SC2046
/usr/bin/time -f "wall %e s" python "$here/bench/peer.py" airbench94 "$data" --epochs "$airbench" --work "$out/peer" \
  $(source_of "${AIRBENCH_SOURCE:-}") > "$out/airbench94.log" 2>&1
echo "trainer: $seconds s of training + evaluation; record script: $record epochs; airbench94.py: $airbench epochs" \
  | tee "$out/lengths"
grep -E "^(route auto|done|time):" "$out/auto.log"
grep -E "eval" "$out/speedrun.log" "$out/airbench94.log" | tail -2
