"""Progress output: tqdm bars on a terminal, plain periodic lines in logs, nothing when quiet."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

from tqdm import tqdm


class LogLines:
    """The progress-bar interface for logs: a plain line every `interval` seconds, no \\r.

    tqdm writes carriage returns that turn a log file into one long line; this keeps the same
    figures (step, loss, accuracy, lr, img/s) readable in files, CI logs and job schedulers.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", interval: float = 30.0, stream=None):
        self.total, self.n, self.desc = total, initial, desc
        self.interval = interval
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self.last_print = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text
        if time.perf_counter() - self.last_print >= self.interval:
            self.last_print = time.perf_counter()
            print(f"{self.desc}: step {self.n}/{self.total}  {self.postfix}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class NoProgress(LogLines):
    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass


def make_progress(quiet: bool) -> Callable[..., Iterable]:
    """tqdm bars on a terminal, plain lines every 30 s in a log, nothing with --quiet."""
    if quiet:
        return NoProgress
    if not sys.stderr.isatty():
        return LogLines

    def bar(**kwargs):
        return tqdm(leave=False, dynamic_ncols=True, mininterval=0.5, unit="step", file=sys.stderr, **kwargs)

    return bar


def run_eta(steps_done: int, steps_left: int, seconds: float) -> str:
    """The time the run's remaining steps take at the speed of the steps_done that took `seconds`."""
    if steps_done <= 0:
        return "?"
    return format_duration(max(0, steps_left - steps_done) * seconds / steps_done)


def format_duration(seconds: float) -> str:
    """A duration as a person says it: 45 s, 12 min, 3.4 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
