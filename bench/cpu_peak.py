"""The distance to the limit: the training path's arithmetic rate against this machine's measured
peak for a large matmul and a ResNet-shaped 3x3 convolution, in each precision.

    python bench/cpu_peak.py [--models resnet20 resnet9 resnet18] [--batch 64] [--device cpu]

Training a model costs about three forward passes of multiply-adds an image (the forward, and
the backward's two products per layer); its rate is 2 x 3 x forward MACs x img/s FLOP/s. The peak
rates are the best of a few timed repetitions. Prints a Markdown table, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_cost import forward_macs  # noqa: E402

from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402
from resnet_cifar.training.precision_choice import img_per_s  # noqa: E402
from resnet_cifar.utils.devices import autocast  # noqa: E402


def best_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(device: torch.device, precision: str, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    with autocast(device, precision):
        seconds = best_seconds(lambda: (a @ b).sum().item())
    return 2 * n ** 3 / seconds / 1e9


def conv_gflops(device: torch.device, precision: str, channels_last: bool, batch: int = 64, width: int = 128,
                size: int = 16) -> float:
    """A ResNet-18 stage-2 convolution: 128 -> 128 channels, 3x3, at 16x16."""
    x = torch.randn(batch, width, size, size, device=device)
    w = torch.randn(width, width, 3, 3, device=device)
    if channels_last:
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), autocast(device, precision):
        seconds = best_seconds(lambda: F.conv2d(x, w, padding=1).sum().item())
    return 2 * batch * width * width * 9 * size * size / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=["resnet20", "resnet9", "resnet18"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for precision in args.precisions:
        peak = {"matmul 2048": matmul_gflops(device, precision),
                "conv 3x3 128ch 16x16 NCHW": conv_gflops(device, precision, False),
                "conv 3x3 128ch 16x16 channels_last": conv_gflops(device, precision, True)}
        for channels_last in (False, True):
            for name in args.models:
                speed = img_per_s(device, name, args.batch, 10, precision, channels_last, seconds=2.0)
                train = 2 * 3 * forward_macs(modeltype(name)) * speed / 1e9
                best = max(peak.values())
                rows.append({"precision": precision, "layout": "channels_last" if channels_last else "NCHW",
                             "model": name, "img_per_s": round(speed, 1), "train_gflops": round(train, 1),
                             **{k: round(v, 1) for k, v in peak.items()}, "share_of_peak": round(train / best, 3)})
    print("| precision | layout | model | img/s | training GFLOP/s | matmul GFLOP/s | conv NCHW | conv channels_last "
          "| share of the best peak |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['layout']} | {r['model']} | {r['img_per_s']:,.1f} | {r['train_gflops']:,.1f} "
              f"| {r['matmul 2048']:,.1f} | {r['conv 3x3 128ch 16x16 NCHW']:,.1f} "
              f"| {r['conv 3x3 128ch 16x16 channels_last']:,.1f} | {r['share_of_peak']:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
