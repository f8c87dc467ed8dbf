"""Peak memory of a real CPU training run against the classic baseline, process trees included.

    python bench/memory.py --model resnet18 --data-dir data/cifar10-jpeg --steps 10

Each command runs in its own process; a sampler sums PSS (proportional set size: shared pages
counted once across processes, so forked DataLoader workers are not over-counted) over the
process and all its children every 50 ms, and reports the peak. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            kids = []
        found.extend(int(k) for k in kids)
        frontier.extend(int(k) for k in kids)
    return found


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_tree_pss(command: list[str]) -> tuple[float, float, int]:
    """(peak MiB, seconds, exit code) of command and its descendants."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(pss_kib(p) for p in [proc.pid, *children_of(proc.pid)]))
        time.sleep(0.05)
    return peak / 1024, time.perf_counter() - started, proc.returncode


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        ours = [sys.executable, "main.py", "--model", args.model, "--data-dir", args.data_dir, "--no-download",
                "--max-steps", str(args.steps), "--run-dir", os.path.join(tmp, "run"), "--quiet"]
        classic = [sys.executable, "bench/classic_baseline.py", "--model", args.model, "--data-dir",
                   args.data_dir, "--steps", str(args.steps)]
        results = {}
        for name, command in (("train", ours), ("classic", classic)):
            peak, seconds, code = peak_tree_pss(command)
            if code != 0:
                raise SystemExit(f"{name} failed with exit code {code}")
            results[name] = {"peak_pss_mib": round(peak, 1), "seconds": round(seconds, 1)}
    ratio = results["train"]["peak_pss_mib"] / results["classic"]["peak_pss_mib"]
    report = {"model": args.model, "steps": args.steps, **results, "ratio_train_over_classic": round(ratio, 3)}
    print(f"peak memory (PSS, process tree), {args.model}, {args.steps} steps:")
    for name in ("train", "classic"):
        print(f"  {name:<8} {results[name]['peak_pss_mib']:8.1f} MiB  ({results[name]['seconds']:.1f} s)")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
