"""Shared helpers for tests that run the real CLI."""
from __future__ import annotations

from pathlib import Path

from resnet_cifar.cli import main as cli
from resnet_cifar.runfiles.run_files import MetricsLog


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tiny_train_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """A ResNet-20 run on the 250-image synthetic set: 7 steps of 32 per epoch."""
    return ["--mode", "train", "--model", "resnet20", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--batch-size", "32", "--epochs", "2", "--quiet", "--no-download", "--precision", "fp32",
            *extra]


def read_metrics(run_dir: Path) -> list[dict]:
    return MetricsLog(Path(run_dir) / "metrics.csv").rows()


def png_ok(path: Path) -> bool:
    """A whole PNG picture of a readable size."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.format == "PNG" and image.size[0] > 100
