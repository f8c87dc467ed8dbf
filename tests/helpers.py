"""Shared helpers for tests that run the real CLI."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

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


def python(*args, env=None, **kwargs):
    """Run a Python process in the repository root with a one-thread torch (reproducible)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def same_state(a: dict, b: dict) -> bool:
    """torch.equal on every tensor of two nested checkpoint structures."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def training_state(payload: dict) -> dict:
    return {k: payload[k] for k in ("model_state", "optimizer_state", "schedule_state", "epoch", "step",
                                    "global_step")}


def skip_unless_installed(*modules: str) -> None:
    """Skip the test, naming them, when optional packages it needs are not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs the optional package(s) {', '.join(missing)}: pip install {' '.join(missing)}")


def optional_packages(arguments: list[str]) -> tuple[str, ...]:
    """The optional packages a command line needs: its export format's, TensorBoard's, YAML's."""
    from resnet_cifar.results.exporting import PACKAGES

    needed: tuple[str, ...] = ("tensorboard",) if "--tensorboard" in arguments else ()
    if "--format" in arguments:
        needed += PACKAGES.get(arguments[arguments.index("--format") + 1], ())
    if "--config" in arguments and arguments[arguments.index("--config") + 1].endswith((".yaml", ".yml")):
        needed += ("yaml",)
    return needed
