"""The data sets a run trains on: CIFAR-10, CIFAR-100 and any folder of small images.

Each is found in --data-dir in the official pickled layout (cifar_pickles.py), as an image-folder
tree (image_folders.py) or, for CIFAR, downloaded. Each split is held as one uint8 tensor
(N, 3, S, S); loader.py batches and augments it.
"""
from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_cifar.data import cifar100_classes
from resnet_cifar.data.cifar_pickles import (
    CIFAR10_FOLDER,
    CIFAR10_TRAIN,
    CIFAR100_FOLDER,
    Arrays,
    read_cifar10,
    read_cifar100,
)
from resnet_cifar.data.image_folders import FolderArrays, read_image_folder
from resnet_cifar.errors import UserError

DATASETS = ("cifar10", "cifar100", "folder")
LABEL_SETS = ("fine", "coarse")  # CIFAR-100's 100 classes or its 20 superclasses
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and standard deviation of the 50,000 training images (0-1 scale), as published
# with each data set's usual recipes; a folder's are computed from its training images.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGE_SIZE = 32  # CIFAR's, and a checkpoint's when it records none
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split | None  # None: a folder without test/ (a run then evaluates on its --val-size images)
    classes: tuple[str, ...]
    source: str  # where it was read from, for logs and checkpoints
    kind: str = "cifar10"
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])


@dataclass(frozen=True)
class DataSpec:
    """Which data set to read, and where: what --dataset, --data-dir, --labels and --image-size say."""

    kind: str = "cifar10"
    data_dir: str = "./data"
    labels: str = "fine"
    image_size: int | None = None  # folder only: resize every image to this size when the cache is built
    download: bool = True

    @classmethod
    def of(cls, config: Mapping[str, Any], data_dir: str | None = None, download: bool | None = None) -> DataSpec:
        """The spec of a training config (a TrainConfig's dict, or a checkpoint's: older ones name no data set)."""
        return cls(kind=config.get("dataset", "cifar10"), data_dir=data_dir or config.get("data_dir", "./data"),
                   labels=config.get("labels", "fine"), image_size=config.get("image_size"),
                   download=config.get("download", True) if download is None else download)

    @property
    def name(self) -> str:
        return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "folder": "the image folder"}[self.kind]

    @property
    def num_classes(self) -> int | None:
        """The class count known before reading (None for a folder: its class folders say)."""
        if self.kind == "cifar100":
            return len(cifar100_classes.COARSE_CLASSES if self.labels == "coarse" else cifar100_classes.FINE_CLASSES)
        return 10 if self.kind == "cifar10" else None


def check_spec(spec: DataSpec) -> None:
    """Refuse options that do not apply to the chosen data set."""
    if spec.kind not in DATASETS:
        raise UserError(f"unknown data set {spec.kind!r}; choose one of: {', '.join(DATASETS)}")
    if spec.labels != "fine" and spec.kind != "cifar100":
        raise UserError(f"--labels {spec.labels} is for --dataset cifar100 (its 20 superclasses); "
                        f"--dataset {spec.kind} has one set of labels")
    if spec.image_size is not None and spec.kind != "folder":
        raise UserError(f"--image-size is for --dataset folder; {spec.name} images are {IMAGE_SIZE}x{IMAGE_SIZE}")


def trained_image_size(payload: dict) -> int:
    """The image size a checkpoint's model was trained on (CIFAR's where the checkpoint names none)."""
    return payload.get("image_size", IMAGE_SIZE)


def check_matches(data: Dataset, payload: dict, what: str) -> None:
    """Refuse data whose classes or image size differ from those the checkpoint's model (`what`)
    was trained on."""
    found, classes, size = list(data.classes), list(payload["classes"]), trained_image_size(payload)
    if len(found) != len(classes):
        raise UserError(f"the data set in {data.source} has {len(found)} classes but {what} has {len(classes)}")
    if found != classes:
        i = next(i for i, (a, b) in enumerate(zip(found, classes, strict=True)) if a != b)
        raise UserError(f"the data set in {data.source} names class {i} {found[i]!r} where {what} has "
                        f"{classes[i]!r}")
    if data.image_size != size:
        raise UserError(f"the data set in {data.source} has {data.image_size}x{data.image_size} images but {what} "
                        f"was trained on {size}x{size}")


def load_dataset(spec: DataSpec) -> Dataset:
    """Find the data set in spec.data_dir: the official pickles, then an image-folder tree, then
    (CIFAR only, where allowed) a download."""
    check_spec(spec)
    data_dir = Path(spec.data_dir)
    if spec.kind == "folder":
        if not (data_dir / "train").is_dir():
            raise UserError(f"no image folders in {data_dir}: --dataset folder reads {data_dir}/train/<class>/ "
                            f"(and {data_dir}/test/<class>/ where it exists)")
        return _from_folder(spec, read_image_folder(data_dir, spec.image_size), str(data_dir))
    pickled = _find_pickles(spec, data_dir)
    if pickled is not None:
        return pickled
    if (data_dir / "train").is_dir():
        return _from_folder(spec, read_image_folder(data_dir, required_size=IMAGE_SIZE), str(data_dir))
    folder = CIFAR10_FOLDER if spec.kind == "cifar10" else CIFAR100_FOLDER
    looked_for = (f"looked for {data_dir / folder} and image folders {data_dir}/train/<class>/, "
                  f"{data_dir}/test/<class>/")
    if not spec.download:
        raise UserError(f"{spec.name} not found: {looked_for}; point --data-dir at a copy")
    try:
        _download(spec.kind, data_dir)
    except Exception as e:  # no network, a proxy, a full disk: all end the same way for the user
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{spec.name} not found and download failed ({reason}): {looked_for}; "
                        f"point --data-dir at a copy") from None
    return _find_pickles(spec, data_dir)


def data_paths(spec: DataSpec) -> tuple[Path, ...]:
    """The folders a data set is read from (those that exist): what nothing may be written into."""
    data_dir = Path(spec.data_dir)
    candidates = [data_dir / CIFAR10_FOLDER, data_dir / CIFAR100_FOLDER, data_dir / "train", data_dir / "test"]
    if (data_dir / CIFAR10_TRAIN[0]).is_file() or (data_dir / "meta").is_file():
        candidates.append(data_dir)  # the pickles' folder given itself
    return tuple(path for path in candidates if path.exists())


def load_cifar10(data_dir: Path | str, download: bool = True) -> Dataset:
    return load_dataset(DataSpec("cifar10", str(data_dir), download=download))


def _find_pickles(spec: DataSpec, data_dir: Path) -> Dataset | None:
    """The official layout in data_dir or in its usual subfolder; None where neither holds it."""
    if spec.kind == "cifar10":
        for folder in (data_dir / CIFAR10_FOLDER, data_dir):
            if (folder / CIFAR10_TRAIN[0]).exists():
                return _from_arrays(spec, read_cifar10(folder, CIFAR10_CLASSES), str(folder))
        return None
    for folder in (data_dir / CIFAR100_FOLDER, data_dir):
        if (folder / "train").is_file():
            return _from_arrays(spec, read_cifar100(folder, spec.labels), str(folder))
    return None


def _published_stats(kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (CIFAR10_MEAN, CIFAR10_STD) if kind == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)


def _from_arrays(spec: DataSpec, arrays: Arrays, source: str) -> Dataset:
    mean, std = _published_stats(spec.kind)
    return Dataset(_split(arrays.train_x, arrays.train_y), _split(arrays.test_x, arrays.test_y), arrays.classes,
                   source, spec.kind, mean, std)


def _from_folder(spec: DataSpec, tree: FolderArrays, source: str) -> Dataset:
    """A Dataset of an image-folder tree: a folder's own mean and std, CIFAR's published ones, and
    for CIFAR the expected classes (the superclasses, mapped from the class folders, for coarse labels)."""
    train_y, test_y, classes = tree.train_y, tree.test_y, tree.classes
    if spec.kind == "folder":
        mean, std = tree.mean, tree.std
    else:
        mean, std = _published_stats(spec.kind)
        if spec.kind == "cifar100" and spec.labels == "coarse" and set(classes) == set(cifar100_classes.FINE_CLASSES):
            coarse = cifar100_classes.COARSE_CLASSES
            to_coarse = np.array([coarse.index(cifar100_classes.SUPERCLASS_OF[name]) for name in classes])
            train_y, test_y, classes = to_coarse[train_y], None if test_y is None else to_coarse[test_y], coarse
        if len(classes) != spec.num_classes:
            raise UserError(f"the image folders in {source} hold {len(classes)} classes, but {spec.name} "
                            f"{'coarse labels are' if spec.labels == 'coarse' else 'has'} {spec.num_classes}; "
                            f"for another set of classes use --dataset folder")
    test = None if tree.test_x is None else _split(tree.test_x, test_y)
    return Dataset(_split(tree.train_x, train_y), test, classes, source, spec.kind, mean, std)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def _download(kind: str, data_dir: Path) -> None:
    """torchvision's download, which checks the archive's MD5 sum and unpacks it in data_dir."""
    from torchvision.datasets import CIFAR10, CIFAR100

    # urllib has no timeout by default: without one, a machine with no network can hang for minutes.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (CIFAR10 if kind == "cifar10" else CIFAR100)(str(data_dir), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def split_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Hold out val_size training images, chosen by a permutation seeded with seed."""
    if val_size == 0:
        return train, None
    if not 0 < val_size < len(train):
        raise UserError(f"--val-size must be between 0 and {len(train) - 1}, got {val_size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    return train.subset(order[val_size:]), train.subset(order[:val_size])
