"""The training step of airbench94's routes on this machine, side by side: SGD (airbench94's
recipe) and Muon (airbench94-muon's), each at batch 1024 and 2000, eager and under torch.compile,
on a batch already in memory (the loader apart), bf16 autocast and channels_last as --precision
auto picks them on a CPU with native bf16.

    python bench/airbench_steps.py [--steps 4] [--rounds 3] [--batch-sizes 1024 2000] [--no-compile] [--rules]

Variants take turns inside each round so that drift on a noisy machine hits them alike; each
figure is the median img/s over rounds. A compiled variant's first steps (the compilation) are
timed apart and left out. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_name, interleaved_img_per_s, medians  # noqa: E402

from resnet_cifar.config import TrainConfig  # noqa: E402
from resnet_cifar.models.registry import modeltype  # noqa: E402
from resnet_cifar.recipes import apply_recipe  # noqa: E402
from resnet_cifar.training.assembly import make_step_context  # noqa: E402
from resnet_cifar.training.step import train_step  # noqa: E402

ROUTES = {"sgd": "airbench94", "muon": "airbench94-muon"}


def make_variant(route: str, batch: int, compiled: bool, precision: str, rules: bool = False):
    """A variant's step. rules: each group's lr from the schedule's group rules every step, as
    training/epoch.py sets them (the whitening bias frozen or falling, BatchNorm biases scaled);
    else one lr times each group's scale."""
    config = apply_recipe(TrainConfig(model="airbench94", recipe=ROUTES[route]), set())
    config = replace(config, batch_size=batch, compile=compiled)
    device = torch.device("cpu")
    model = modeltype("airbench94").to(memory_format=torch.channels_last)
    ctx = make_step_context(model, config, device, precision, steps_per_epoch=50_000 // batch)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 10, (batch,), generator=generator)

    steps_per_epoch, done = 50_000 // batch, [0]

    def run(steps: int) -> None:
        for _ in range(steps):
            lrs = ctx.schedule.group_lrs(*divmod(done[0], steps_per_epoch)) if rules else config.lr
            train_step(ctx, inputs, targets, lrs)
            done[0] += 1

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps a variant a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 2000])
    parser.add_argument("--no-compile", action="store_true", help="eager variants only")
    parser.add_argument("--rules", action="store_true", help="also each eager variant with its groups' lr rules "
                        "evaluated every step, as training runs it, beside one lr for every group")
    args = parser.parse_args(argv)
    variants, compile_s = {}, {}
    for route in ROUTES:
        for batch in args.batch_sizes:
            kinds = [(False, False), *([(False, True)] if args.rules else []),
                     *([] if args.no_compile else [(True, False)])]
            for compiled, rules in kinds:
                name = f"{route} batch {batch}{' compiled' if compiled else ''}{' rules' if rules else ''}"
                run = make_variant(route, batch, compiled, args.precision, rules)
                started = time.perf_counter()
                run(2)  # warm-up; under torch.compile, the compilation
                compile_s[name] = time.perf_counter() - started
                variants[name] = (run, batch)
    samples = interleaved_img_per_s({name: run for name, (run, _) in variants.items()}, torch.device("cpu"),
                                    args.rounds, steps_of=lambda name: args.steps,
                                    batch_size=lambda name: variants[name][1])
    result = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "precision": args.precision, "img_per_s": medians(samples),
              "first_two_steps_s": compile_s}
    first = next(iter(result["img_per_s"]))
    base = result["img_per_s"][first]
    print(f"{'variant':28s} {'img/s':>8s} {'vs first':>9s} {'first 2 steps s':>15s}")
    for name, speed in result["img_per_s"].items():
        print(f"{name:28s} {speed:8.0f} {speed / base:8.2f}x {compile_s[name]:15.1f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
