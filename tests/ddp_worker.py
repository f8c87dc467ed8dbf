"""A training run through the library API, alone or as one torchrun worker, that saves what each
rank ends with, so the DDP tests can compare ranks and runs (only main.py's files are written
otherwise, and only by rank 0).

    torchrun --standalone --nproc-per-node=2 tests/ddp_worker.py OUT_DIR [--toy] -- MAIN_ARGS...
    python tests/ddp_worker.py OUT_DIR [--toy] -- MAIN_ARGS...

with the project folder on PYTHONPATH (tests/test_distributed.py sets it).

Writes OUT_DIR/rank<R>.pt: {"state": parameters and buffers, "n": test images evaluated,
"correct": per-class correct counts, "logits": the model's logits on the first 64 test images,
"writes": the run-directory writes this rank made, in order (checkpoint, config, metrics, curves,
report)}.
--toy trains a BatchNorm-free model instead of the one --model names.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from resnet_cifar.cli import main as cli
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, load_cifar10
from resnet_cifar.data.loader import Normalizer
from resnet_cifar.results import plots
from resnet_cifar.runfiles import checkpoints, run_files
from resnet_cifar.training import assembly, epoch_results
from resnet_cifar.training import loop as training
from resnet_cifar.utils import distributed


def toy_model(name: str, num_classes: int, dropout: float = 0.0, **model_options) -> nn.Module:
    """No BatchNorm: DDP's averaged gradient then equals the single process's gradient. The model
    options (whitening, Dirac, BN scales) concern the named ResNet and have nothing to act on here."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(8 * 16, num_classes))


def main(argv: list[str]) -> int:
    split = argv.index("--")
    out, options, main_args = Path(argv[0]), argv[1:split], argv[split + 1:]
    if "--toy" in options:
        assembly.modeltype = toy_model
    args = cli.parse_args(main_args)
    config = cli.train_config_from_args(args)
    launch = distributed.describe_launch()
    dist = distributed.start(launch, config.device, config.dist_timeout)
    data = load_cifar10(Path(config.data_dir), download=False)
    Path(config.run_dir).mkdir(parents=True, exist_ok=True)

    dumped = {}

    def dump(parts: assembly.RunParts) -> None:
        results = epoch_results.evaluate_epoch(parts, lambda: False)  # leaves every rank with rank 0's buffers
        model = parts.model.eval()
        images = Normalizer(CIFAR10_MEAN, CIFAR10_STD, parts.device)(data.test.images[:64], False)
        with torch.no_grad():
            logits = model(images)
        dumped.update(state={k: v.clone() for k, v in model.state_dict().items()}, n=results["test"].n,
                      correct=results["test"].per_class_correct, logits=logits)

    out.mkdir(parents=True, exist_ok=True)
    writes = count_writes()
    training.train_model(config, data, Path(config.run_dir), dist=dist, on_end=dump, log=lambda line: None)
    distributed.stop(dist)
    torch.save({**dumped, "writes": writes}, out / f"rank{dist.rank}.pt")
    return 0


def count_writes() -> list[str]:
    """Record every call of the functions through which a run writes its files."""
    writes = []

    def counting(function, name):
        def wrapper(*args, **kwargs):
            writes.append(name)
            return function(*args, **kwargs)
        return wrapper

    checkpoints.save_checkpoint = counting(checkpoints.save_checkpoint, "checkpoint")
    run_files.write_config = counting(run_files.write_config, "config")
    run_files.MetricsLog._write = counting(run_files.MetricsLog._write, "metrics")
    plots.plot_curves = counting(plots.plot_curves, "curves")
    training.write_final_reports = counting(training.write_final_reports, "report")
    return writes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
