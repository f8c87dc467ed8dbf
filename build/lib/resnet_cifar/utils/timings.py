"""Where a run's wall time goes: seconds per phase on the training thread, and the process's age.

A short run on a fast GPU spends as much time around training as in it (start-up, data, the
checkpoints, the curves, the final report: bench/README.md); timings.json in the run directory
says how much of each, so a slow phase shows up in every run instead of in a special benchmark.
"""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from resnet_cifar.utils.atomic_files import atomic_path

PHASES = ("data", "setup", "training", "evaluation", "checkpoints", "curves", "report")


class PhaseClock:
    """Seconds spent in named phases (PHASES), summed over the run."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self.started = clock()
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self.add(name, self._clock() - start)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def summary(self, before_run_s: float | None) -> dict:
        """Seconds per phase, "other" (the run's wall time outside them) and "run" (its wall time);
        before_run_s: the process's age when the run began (interpreter start-up, imports, argument
        parsing; None where unknown)."""
        run_s = self.elapsed()
        phases = {name: round(seconds, 3) for name, seconds in self.seconds.items()}
        return {"before_run_s": None if before_run_s is None else round(before_run_s, 3),
                **{f"{name}_s": seconds for name, seconds in phases.items()},
                "other_s": round(max(0.0, run_s - sum(self.seconds.values())), 3), "run_s": round(run_s, 3)}


def process_age_s(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        fields = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
        uptime = float((proc / "uptime").read_text().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: starttime
    except (OSError, ValueError, IndexError):
        return None


def format_timings(timings: dict) -> str:
    before = timings["before_run_s"]
    total = timings["run_s"] + (before or 0.0)
    parts = [f"{name} {timings[f'{name}_s']:.1f}" for name in (*PHASES, "other")]
    head = f"time: {total:.1f} s" + (f" (start-up {before:.1f} s, then " if before is not None else " (")
    return head + ", ".join(parts) + ")"


def write_timings(run_dir: Path, timings: dict) -> None:
    with atomic_path(run_dir / "timings.json") as tmp:
        tmp.write_text(json.dumps(timings, indent=2) + "\n")


def seconds_per_call(call: Callable[[], object], clock: Callable[[], float] = time.perf_counter,
                     untimed: int = 2, min_seconds: float = 3.0,
                     min_calls: int = 3, max_calls: int = 50,
                     agree: Callable[[bool], bool] = lambda go_on: go_on, median: bool = False) -> float:
    """Seconds per call of `call` (which must return only once its work is done), after `untimed`
    warm-up calls, timed until min_seconds have passed (min_calls..max_calls calls): the mean, or
    with median=True the median call, which a few calls slowed by something else do not move.
    agree: the processes' common answer to "go on?" when the calls are collective (DDP steps), so
    that every process makes the same number of them."""
    for _ in range(untimed):
        call()
    started = clock()
    durations: list[float] = []
    while agree(len(durations) < min_calls or (clock() - started < min_seconds and len(durations) < max_calls)):
        before = clock()
        call()
        durations.append(clock() - before)
    if median:
        return statistics.median(durations)
    return (clock() - started) / len(durations)


def warm_then_time(call: Callable[[], object], clock: Callable[[], float], warm_calls: int,
                   **timing) -> tuple[float, float]:
    """(what the first warm_calls calls took beyond as many ordinary calls, the median ordinary
    call): the first calls pay for allocation, autotuning and compiling. `timing`: seconds_per_call's
    min_seconds, min_calls, max_calls and agree for the ordinary calls."""
    warm_s = warm_calls * seconds_per_call(call, clock, untimed=0, min_seconds=0.0, min_calls=warm_calls,
                                           max_calls=warm_calls)
    per_call = seconds_per_call(call, clock, untimed=0, median=True, **timing)
    return max(0.0, warm_s - warm_calls * per_call), per_call
