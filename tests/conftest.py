"""Tiny synthetic CIFAR-like data sets in both layouts; no test needs the real data or a network."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_cifar.data.datasets import Dataset, Split

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


@pytest.fixture(autouse=True, scope="session")
def precision_cache(tmp_path_factory):
    """`--precision auto` caches its measurements: in a temporary folder of this test run, never in ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("precision-cache")
    previous = os.environ.get("RESNET_CIFAR_CACHE")
    os.environ["RESNET_CIFAR_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("RESNET_CIFAR_CACHE", None)
    else:
        os.environ["RESNET_CIFAR_CACHE"] = previous


@pytest.fixture
def batches_dir(tmp_path: Path) -> Path:
    """A data dir holding cifar-10-batches-py/ with 250 train and 100 test images."""
    write_batches(tmp_path / "data" / "cifar-10-batches-py")
    return tmp_path / "data"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


def synthetic_dataset(n_train=320, n_test=100):
    tx, ty = synthetic_images(n_train, 0)
    vx, vy = synthetic_images(n_test, 1)
    return Dataset(Split(torch.from_numpy(tx), torch.from_numpy(ty)),
                   Split(torch.from_numpy(vx), torch.from_numpy(vy)),
                   tuple(f"c{i}" for i in range(10)), source="synthetic")


@pytest.fixture(scope="module")
def module_batches(tmp_path_factory) -> Path:
    """A data dir holding cifar-10-batches-py/ (250 train, 100 test images), shared by a module's tests."""
    root = tmp_path_factory.mktemp("batches")
    write_batches(root / "cifar-10-batches-py")
    return root
