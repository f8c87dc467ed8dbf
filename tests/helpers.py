"""Shared helpers for tests that run the real CLI."""
from __future__ import annotations

import hashlib
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


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under folder (hidden ones included) with the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def handmade_payload(model: str = "resnet20", classes: int = 10) -> dict:
    """A checkpoint payload as a run writes it, far enough for --mode eval/predict/export to load its model
    (randomly initialised weights; no training state)."""
    from resnet_cifar.config import TrainConfig
    from resnet_cifar.models.registry import modeltype

    torch.manual_seed(0)
    return {"model_name": model, "num_classes": classes, "dataset": "cifar10",
            "classes": [f"class{i}" for i in range(classes)], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
            "image_size": 32, "config": TrainConfig(model=model, num_classes=classes).to_dict(),
            "model_state": modeltype(model, classes).state_dict(), "ema_state": None,
            "epoch": 1, "step": 0, "global_step": 7}


def fake_run(folder: Path) -> Path:
    """A folder that holds a run as the destination rule sees it (config.json, metrics.csv, last.pt)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model": "resnet20", "seed": 0}\n')
    (folder / "metrics.csv").write_text("epoch,test_acc\n1,0.5\n")
    (folder / "last.pt").write_bytes(b"not loaded by the rule")
    return folder


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
