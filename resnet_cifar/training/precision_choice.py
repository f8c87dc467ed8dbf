"""`--precision auto` with no `--channels-last`: the precision and memory layout that train the
run's own model fastest on this device, chosen from a short timed step of each candidate.

The rule devices.resolve_precision keeps was fixed on one CPU and was wrong on another (fp32 with
channels_last ran 1.2x NCHW's speed on an AVX2-only EPYC, where the rule picked NCHW), so auto
measures instead. The figures are cached per (device, torch version, model, batch) in a JSON file,
so each combination costs seconds once; a typed --precision or --channels-last is never measured.
"""
from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnet_cifar.models.registry import modeltype
from resnet_cifar.utils.atomic_files import write_text
from resnet_cifar.utils.devices import autocast, cpu_has_fast_bf16
from resnet_cifar.utils.timings import seconds_per_call

CACHE_VARIABLE = "RESNET_CIFAR_CACHE"  # a folder; default ~/.cache/resnet-cifar
MEASURE_BATCH_CPU = 64  # a CPU's ranking at the run's batch is the same; its steps are not


@dataclass(frozen=True)
class Choice:
    precision: str
    channels_last: bool
    figures: dict[str, float]  # img/s of each candidate, "bf16 channels_last": 1012.0
    cached: bool

    def describe(self) -> str:
        ranked = ", ".join(f"{name} {value:,.0f}" for name, value in sorted(self.figures.items(),
                                                                             key=lambda item: -item[1]))
        where = "cached" if self.cached else "measured now, cached"
        chosen = label(self.precision, self.channels_last)
        return f"precision auto: {chosen}, the fastest here (img/s {where}: {ranked})"


def label(precision: str, channels_last: bool) -> str:
    return f"{precision} {'channels_last' if channels_last else 'NCHW'}"


def candidates(device: torch.device) -> list[tuple[str, bool]]:
    if device.type == "cuda":
        half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return [(half, True), (half, False), ("fp32", True)]
    return [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def device_key(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs, {'native' if cpu_has_fast_bf16() else 'no native'} bf16"


def cache_file() -> Path:
    folder = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "resnet-cifar"
    return Path(folder) / "precision.json"


def read_cache(path: Path) -> dict:
    """A JSON cache of measurements ({} when missing or damaged: measuring again is the remedy)."""
    try:
        values = json.loads(path.read_text())
        return values if isinstance(values, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(path: Path, values: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass  # the cache only saves time


def choose(device: torch.device, model_name: str, batch_size: int, num_classes: int = 10, image_size: int = 32,
           measure: Callable[..., float] | None = None, cache: Path | None = None) -> Choice:
    """The fastest candidate for this model, batch and image size on this device, from the cache or measured."""
    measure = measure if measure is not None else functools.partial(img_per_s, image_size=image_size)
    cache = cache if cache is not None else cache_file()
    size = "" if image_size == 32 else f" | {image_size}px"
    key = f"{device_key(device)} | torch {torch.__version__} | {model_name} | batch {batch_size}{size}"
    stored = read_cache(cache)
    figures = stored.get(key)
    options = candidates(device)
    cached = isinstance(figures, dict) and all(label(*option) in figures for option in options)
    if not cached:
        figures, slowest_allowed = {}, None
        for precision, channels_last in options:
            value = measure(device, model_name, batch_size, num_classes, precision, channels_last, slowest_allowed)
            figures[label(precision, channels_last)] = value
            # A candidate far slower than the best so far (bf16 without native kernels: ~10x) is
            # stopped after its first step instead of being timed in full.
            slowest_allowed = max(figures.values()) / 4
        write_cache(cache, {**stored, key: figures})
    best = max(options, key=lambda option: figures[label(*option)])
    return Choice(best[0], best[1], dict(figures), cached)


def img_per_s(device: torch.device, model_name: str, batch_size: int, num_classes: int, precision: str,
              channels_last: bool, slowest_allowed: float | None = None, seconds: float = 0.5,
              clock: Callable[[], float] = time.perf_counter, image_size: int = 32) -> float:
    """Training images a second of one SGD step of the model at this precision and layout, after
    one untimed step; timed for about `seconds` (2 to 20 steps)."""
    batch = batch_size if device.type == "cuda" else min(batch_size, MEASURE_BATCH_CPU)
    generator = torch.Generator().manual_seed(0)
    model = modeltype(model_name, num_classes).to(device)
    inputs = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, num_classes, (batch,), generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with autocast(device, precision):
            loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss.item()  # waits for the device

    first = batch / max(1e-9, seconds_per_call(step, clock, untimed=0, min_seconds=0.0, min_calls=1, max_calls=1))
    if slowest_allowed is not None and first < slowest_allowed:
        return first
    return batch / max(1e-9, seconds_per_call(step, clock, untimed=0, min_seconds=seconds, min_calls=2, max_calls=20))
