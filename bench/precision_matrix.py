"""Compute-only training throughput for every precision x memory layout (x compile), per device.

    python bench/precision_matrix.py --model resnet18 [--device cpu] [--compile]

Each cell times training steps on one batch already on the device (no loader), interleaved over
--rounds rounds, median reported. The fastest eager cell among `--precision auto`'s candidates is
marked: it is what auto picks when it measures the same model and batch (precision_choice.py times
those candidates in the run itself).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import interleaved_img_per_s, medians  # noqa: E402

from resnet_cifar.config import TrainConfig  # noqa: E402
from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402
from resnet_cifar.training.assembly import make_step_context  # noqa: E402
from resnet_cifar.training.precision_choice import candidates  # noqa: E402
from resnet_cifar.training.step import train_step  # noqa: E402
from resnet_cifar.utils.devices import resolve_device  # noqa: E402


def make_cell(model_name: str, device: torch.device, precision: str, channels_last: bool, compile_model: bool,
              batch_size: int):
    torch.manual_seed(0)
    model = modeltype(model_name).to(device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    config = TrainConfig(compile=compile_model)
    ctx = make_step_context(model, config, device, precision, steps_per_epoch=1)
    inputs = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=layout)
    targets = torch.randint(0, 10, (batch_size,), device=device)

    def run(steps: int) -> None:
        for _ in range(steps):
            train_step(ctx, inputs, targets, 0.01)
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=MODEL_NAMES)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="add torch.compile cells (slow to build on CPU)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    precisions = ["fp32"] + [p for p in args.precisions if p != "fp32"]  # fp32 NCHW is the reference
    compile_options = (False, True) if args.compile else (False,)
    cells = {}
    for precision, channels_last, compiled in itertools.product(precisions, (False, True),
                                                                 compile_options):
        key = f"{precision}/{'channels_last' if channels_last else 'nchw'}/{'compile' if compiled else 'eager'}"
        try:
            run = make_cell(args.model, device, precision, channels_last, compiled, args.batch_size)
            started = time.perf_counter()
            run(1)  # warm-up (and compilation)
            print(f"{key}: warm-up step {time.perf_counter() - started:.1f} s", flush=True)
            cells[key] = run
        except Exception as e:  # a combination this device or build cannot run
            print(f"{key}: unavailable ({type(e).__name__}: {str(e).splitlines()[0][:80]})")
    samples = interleaved_img_per_s(cells, device, args.rounds, lambda key: args.steps, args.batch_size)
    img_s = {key: round(value, 1) for key, value in medians(samples).items()}
    baseline = img_s.get("fp32/nchw/eager")
    picks = {f"{precision}/{'channels_last' if layout else 'nchw'}/eager" for precision, layout in candidates(device)}
    eager = {key: value for key, value in img_s.items() if key in picks}
    fastest = max(eager, key=eager.get) if eager else None
    print(f"{args.model} compute-only, batch {args.batch_size}, {device}, {torch.get_num_threads()} threads")
    print(f"{'precision/layout/mode':<32}{'img/s':>10}{'vs fp32 nchw':>14}")
    for key, value in img_s.items():
        mark = "  <- fastest eager: what auto picks" if key == fastest else ""
        print(f"{key:<32}{value:>10.1f}{value / baseline:>13.2f}x{mark}")
    report = {"model": args.model, "device": str(device), "batch_size": args.batch_size, "img_per_s": img_s,
              "fastest_eager": fastest,
              "fastest_vs_fp32_nchw": round(eager[fastest] / baseline, 3) if fastest and baseline else None}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
