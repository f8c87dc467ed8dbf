"""Plain helpers shared by the tests: synthetic data sets in every layout, running the CLI, comparing
states and files. Fixtures are in conftest.py."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_cifar.cli import main as cli
from resnet_cifar.data.datasets import Dataset, Split
from resnet_cifar.runfiles.run_files import MetricsLog

# The project folder, where subprocess tests run main.py.
ROOT = Path(__file__).resolve().parent.parent

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def synthetic_images(n: int, seed: int, num_classes: int = 10, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Learnable images: each class has its own colour, plus noise. (N, 3, size, size) uint8."""
    rng = np.random.RandomState(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    palette = np.random.RandomState(1234).randint(30, 226, size=(num_classes, 3))
    images = palette[labels][:, :, None, None] + rng.randint(-30, 31, size=(n, 3, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_batches(folder: Path, n_train: int = 250, n_test: int = 100, seed: int = 0) -> Path:
    """The official cifar-10-batches-py layout: 5 train batches, test_batch, batches.meta."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = synthetic_images(n_train, seed)
    test_x, test_y = synthetic_images(n_test, seed + 1)
    for i, chunk in enumerate(np.array_split(np.arange(n_train), 5)):
        batch = {b"batch_label": b"training batch", b"labels": train_y[chunk].tolist(),
                 b"data": train_x[chunk].reshape(len(chunk), -1)}
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": test_y.tolist(), b"data": test_x.reshape(n_test, -1)}, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f, protocol=2)
    return folder


def write_cifar100(folder: Path, n_train: int = 300, n_test: int = 100, seed: int = 0, meta: bool = True) -> Path:
    """The official cifar-100-python layout: train, test (fine and coarse labels) and meta."""
    from resnet_cifar.data.cifar100_classes import COARSE_CLASSES, FINE_CLASSES, SUPERCLASS_OF

    folder.mkdir(parents=True, exist_ok=True)
    to_coarse = np.array([COARSE_CLASSES.index(SUPERCLASS_OF[name]) for name in FINE_CLASSES])
    for name, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        images, labels = synthetic_images(n, split_seed, num_classes=100)
        batch = {b"batch_label": name.encode(), b"fine_labels": labels.tolist(),
                 b"coarse_labels": to_coarse[labels].tolist(), b"data": images.reshape(n, -1)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    if meta:
        with open(folder / "meta", "wb") as f:
            pickle.dump({b"fine_label_names": [c.encode() for c in FINE_CLASSES],
                         b"coarse_label_names": [c.encode() for c in COARSE_CLASSES]}, f, protocol=2)
    return folder


def write_image_folder(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0,
                       classes: tuple[str, ...] = CLASSES, size: int = 32) -> Path:
    """DIR/train/<class>/*.png and, unless n_test is 0, DIR/test/<class>/*.png."""
    from PIL import Image

    for split, n, split_seed in (("train", n_train, seed), ("test", n_test, seed + 1)):
        if n == 0:
            continue
        images, labels = synthetic_images(n, split_seed, len(classes), size)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")
    return root


def synthetic_dataset(n_train=320, n_test=100):
    tx, ty = synthetic_images(n_train, 0)
    vx, vy = synthetic_images(n_test, 1)
    return Dataset(Split(torch.from_numpy(tx), torch.from_numpy(ty)),
                   Split(torch.from_numpy(vx), torch.from_numpy(vy)),
                   tuple(f"c{i}" for i in range(10)), source="synthetic")


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
