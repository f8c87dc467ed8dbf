"""On paper: what DistributedDataParallel's gradient all-reduce costs per step, and the scaling
efficiency it leaves, for ResNet-18 and ResNet-50 on H200s over NVLink or 100 Gb/s Ethernet.

    python bench/scaling_model.py

Inputs (printed with the table):
- gradient bytes: the parameter count of the trained model x 4 (DDP reduces fp32 gradients,
  also under bf16 autocast, whose weights stay fp32);
- step time a GPU at each per-GPU batch: measured on one H200 (bench/README.md, "GPU (NVIDIA H200)":
  bf16 + channels_last, img/s of the training path as main.py runs it);
- ring all-reduce: each GPU sends and receives 2(N-1)/N x bytes over the ring's slowest link, plus
  2(N-1) latency hops; bandwidths are assumptions, not measurements (none was possible here):
  NVLink 360 GB/s of NCCL bus bandwidth within an H200 node, 100 Gb/s Ethernet 10 GB/s (80% of
  line rate) per node, one NIC per node, so a ring across nodes is limited by it.
Efficiency = step / (step + all-reduce) with no overlap (a floor), and with the all-reduce hidden
behind the backward pass (about 2/3 of a step; DDP starts reducing each 25 MB bucket as soon as
its gradients are ready) as the ceiling.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_cifar.models.registry import modeltype  # noqa: E402

# Measured img/s on one H200 by per-GPU batch (bench/README.md, runs 1 and 3 of 2026-11-28; the
# later run where a batch was measured twice).
H200_IMG_PER_S = {
    "resnet18": {128: 11_339, 256: 26_740, 512: 51_066, 1024: 64_706, 2048: 70_538, 4096: 72_949},
    "resnet50": {128: 5_125, 512: 15_594, 1024: 17_023},
}
BACKWARD_SHARE = 2 / 3  # of a step: the time the all-reduce can hide behind


@dataclass(frozen=True)
class Link:
    name: str
    bytes_per_s: float
    hop_latency_s: float


NVLINK = Link("NVLink (one node)", 360e9, 5e-6)
ETHERNET = Link("100 Gb/s Ethernet between nodes", 10e9, 30e-6)


def gradient_bytes(model: str) -> int:
    return 4 * sum(p.numel() for p in modeltype(model, 10).parameters())


def allreduce_seconds(n_bytes: int, gpus: int, link: Link) -> float:
    if gpus == 1:
        return 0.0
    return 2 * (gpus - 1) / gpus * n_bytes / link.bytes_per_s + 2 * (gpus - 1) * link.hop_latency_s


def efficiency(step_s: float, comm_s: float, overlap: bool) -> float:
    exposed = max(0.0, comm_s - BACKWARD_SHARE * step_s) if overlap else comm_s
    return step_s / (step_s + exposed)


def batch_for(target: float, gpus: int, comm_s: float, measured: dict[int, int], overlap: bool) -> str:
    """The smallest global batch whose efficiency reaches target: from the measured per-GPU batches
    where one does, else extrapolated with the step time growing as batch / peak img/s (marked ~)."""
    for batch, img_s in measured.items():
        if efficiency(batch / img_s, comm_s, overlap) >= target:
            return f"{gpus * batch:,}"
    # step >= comm * target / (1 - target) without overlap; with it the exposed part is what counts.
    needed_s = comm_s * target / (1 - target) if not overlap else comm_s / (BACKWARD_SHARE + (1 - target) / target)
    return f"~{gpus * math.ceil(round(needed_s * max(measured.values()), 6)):,}"


def rows() -> list[dict]:
    table = []
    for model, measured in H200_IMG_PER_S.items():
        n_bytes = gradient_bytes(model)
        for link, gpu_counts in ((NVLINK, (2, 8)), (ETHERNET, (2, 8, 32))):
            for gpus in gpu_counts:
                comm = allreduce_seconds(n_bytes, gpus, link)
                cells = {batch: (efficiency(batch / img_s, comm, False), efficiency(batch / img_s, comm, True))
                         for batch, img_s in measured.items() if batch in (512, max(measured))}
                table.append({"model": model, "link": link.name, "gpus": gpus, "comm_ms": 1e3 * comm, "cells": cells,
                              "batch_90": batch_for(0.9, gpus, comm, measured, False),
                              "batch_90_overlap": batch_for(0.9, gpus, comm, measured, True)})
    return table


def main() -> None:
    for model, measured in H200_IMG_PER_S.items():
        steps = ", ".join(f"{batch}: {1e3 * batch / img_s:.1f} ms" for batch, img_s in measured.items())
        print(f"{model}: {gradient_bytes(model) / 1e6:.1f} MB of fp32 gradients; H200 step by batch: {steps}")
    print()
    print("| model | interconnect | GPUs | all-reduce a step | efficiency (no overlap / overlapped) by per-GPU batch "
          "| global batch for >= 90%: no overlap | overlapped |")
    print("|---|---|---:|---:|---|---:|---:|")
    for row in rows():
        cells = ", ".join(f"{batch}: {100 * floor:.0f}% / {100 * ceiling:.0f}%"
                          for batch, (floor, ceiling) in row["cells"].items())
        print(f"| {row['model']} | {row['link']} | {row['gpus']} | {row['comm_ms']:.2f} ms | {cells} "
              f"| {row['batch_90']} | {row['batch_90_overlap']} |")


if __name__ == "__main__":
    main()
