"""Timing helpers shared by the benchmarks: device sync and interleaved rounds."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[int], None], steps: int) -> float:
    """Seconds for fn(steps), with queued device work finished on both sides."""
    synchronize(device)
    started = time.perf_counter()
    fn(steps)
    synchronize(device)
    return time.perf_counter() - started


def interleaved_img_per_s(
    variants: dict[str, Callable[[int], None]],
    device: torch.device,
    rounds: int,
    steps_of: Callable[[str], int],
    batch_size: int | Callable[[str], int],
    after: Callable[[str], None] = lambda name: None,
) -> dict[str, list[float]]:
    """img/s of every variant in every round, variants taking turns inside each round so that
    drift on a noisy machine hits all of them alike. batch_size: every variant's, or a variant's
    own from its name."""
    batch_of = batch_size if callable(batch_size) else lambda name: batch_size
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            steps = steps_of(name)
            samples[name].append(steps * batch_of(name) / timed(device, fn, steps))
            after(name)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"
