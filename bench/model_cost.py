"""What each model costs per image: parameters and the forward pass's multiply-adds, counted by
torch.utils.flop_counter on one 32x32 image (no timing: the figures are exact and machine-free).

    python bench/model_cost.py [--models resnet18 wrn-28-10 ...]

Prints a Markdown table. Training costs about three forward passes (forward, and the backward's
two products per convolution), so a model's img/s scales roughly with 1 / its multiply-adds
where the device is compute-bound (a GPU at a large batch, a CPU); small nets on a GPU are bound
by kernel launches instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402


def forward_macs(model: torch.nn.Module) -> int:
    """Multiply-adds of one forward pass on one 32x32 image (the counter reports 2 FLOPs each)."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return counter.get_total_flops() // 2


def cost_rows(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        model = modeltype(name)
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "macs": forward_macs(model)})
    return rows


def table(rows: list[dict]) -> str:
    base = next((row["macs"] for row in rows if row["model"] == "resnet18"), None)
    lines = ["| model | params | forward multiply-adds an image | vs resnet18 |", "|---|---:|---:|---:|"]
    for row in rows:
        ratio = f"{row['macs'] / base:.2f}×" if base else "–"
        lines.append(f"| {row['model']} | {row['params']:,} | {row['macs'] / 1e9:.3f} G | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES), metavar="NAME")
    args = parser.parse_args(argv)
    text = table(cost_rows(args.models))
    print(text)
    return text


if __name__ == "__main__":
    main()
