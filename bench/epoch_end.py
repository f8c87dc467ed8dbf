"""The work after each epoch on the training thread: a checkpoint written in the foreground
against one written in the background while the next epoch's steps run, and the curves plot.

    python bench/epoch_end.py [--model resnet18] [--step-model resnet20] [--steps 5] [--rounds 3]

Each round, in turn: (a) --steps training steps alone; (b) a foreground save_checkpoint of
--model's checkpoint (weights + momentum) alone, and again followed by the same steps; (c) CheckpointWriter(background)
.save, the same steps, then wait() for the write. Figures: the seconds each variant keeps the
training thread busy (save + steps + the wait left over), medians over --rounds, and a redraw of
curves.png for a 30-epoch metrics.csv. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import medians  # noqa: E402

from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402
from resnet_cifar.results.plots import plot_curves  # noqa: E402
from resnet_cifar.runfiles.checkpoints import CheckpointWriter, save_checkpoint  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODEL_NAMES, default="resnet18", help="whose checkpoint is written")
    parser.add_argument("--step-model", choices=MODEL_NAMES, default="resnet20", help="what trains meanwhile")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the steps (fewer than the cores: a core free, as beside a GPU)")
    return parser.parse_args(argv)


def checkpoint_payload(model_name: str) -> dict:
    model = modeltype(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()  # creates the momentum buffers
    return {"model_state": model.state_dict(), "optimizer_state": optimizer.state_dict(), "epoch": 1}


def make_steps(model_name: str, batch_size: int):
    model = modeltype(model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))

    def steps(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    return steps


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    payload = checkpoint_payload(args.model)
    steps = make_steps(args.step_model, args.batch_size)
    steps(1)  # warm-up
    samples = {"steps alone": [], "foreground save alone": [], "foreground save + steps": [],
               "background save + steps + wait": []}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        writer = CheckpointWriter(background=True)
        for _ in range(args.rounds):
            started = time.perf_counter()
            steps(args.steps)
            samples["steps alone"].append(time.perf_counter() - started)
            started = time.perf_counter()
            save_checkpoint(path, payload)
            samples["foreground save alone"].append(time.perf_counter() - started)
            started = time.perf_counter()
            save_checkpoint(path, payload)
            steps(args.steps)
            samples["foreground save + steps"].append(time.perf_counter() - started)
            started = time.perf_counter()
            writer.save(path, payload)
            steps(args.steps)
            writer.wait()
            samples["background save + steps + wait"].append(time.perf_counter() - started)
        rows = [{"epoch": e, "lr": 0.1, "train_loss": 1 / e, "train_acc": 1 - 1 / e, "test_loss": "", "test_acc": "",
                 "tta": "none"} for e in range(1, 31)]
        plot_s = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            plot_curves(rows, Path(folder) / "curves.png")
            plot_s.append(time.perf_counter() - started)
        size_mb = path.stat().st_size / 1e6
    seconds_of = medians(samples)
    alone = seconds_of["steps alone"]
    print(f"{args.model} checkpoint ({size_mb:.1f} MB) while {args.steps} {args.step_model} steps of "
          f"{args.batch_size} run; median of {args.rounds} rounds, torch threads {torch.get_num_threads()}")
    for name, seconds in seconds_of.items():
        extra = "" if "steps" not in name else f"  ({seconds - alone:+.3f} s against the steps alone)"
        print(f"  {name:34s} {seconds:7.3f} s{extra}")
    print(f"  curves.png redraw, 30 epochs       {statistics.median(plot_s):7.3f} s")
    report = {"model": args.model, "step_model": args.step_model, "checkpoint_mb": round(size_mb, 1),
              "seconds": seconds_of, "plot_seconds": statistics.median(plot_s), "threads": torch.get_num_threads()}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
