"""The official pickled layouts: `cifar-10-batches-py/` (five training batches, test_batch,
batches.meta) and `cifar-100-python/` (train, test, meta with fine and coarse label names).

Structure is validated, not MD5 sums: re-packed copies (made from image folders, for example) have
other sums but the same structure. Each reader returns numpy arrays; datasets.py makes the Dataset.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_cifar.errors import UserError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class Arrays:
    """A data set as read: uint8 images (N, 3, 32, 32) and int64 labels (N,) per split."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only.

    CIFAR files are pickles; a plain pickle.load would run whatever code a crafted file names.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_pickle(path: Path, what: str) -> dict:
    """The dict in a CIFAR pickle, with str keys; `what` ("CIFAR-10") names the data set in errors."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # any unpickling failure means the file is not a CIFAR pickle
        raise UserError(f"corrupted {what} file {path}: not a readable pickle ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"corrupted {what} file {path}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_images(path: Path, what: str, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One pickled split or batch: images (N, 3, 32, 32) uint8 and the labels under label_key."""
    batch = read_pickle(path, what)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"corrupted {what} file {path}: missing 'data' or '{label_key}'")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"corrupted {what} file {path}: data must be a uint8 array, found {kind}")
    if data.ndim != 2 or data.shape[1] != PIXELS:
        raise UserError(f"corrupted {what} file {path}: data has shape {tuple(data.shape)}, expected (N, {PIXELS})")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"corrupted {what} file {path}: labels are not integers") from None
    if labels.shape != (data.shape[0],):
        raise UserError(f"corrupted {what} file {path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"corrupted {what} file {path}: labels must be in 0..{num_classes - 1}, "
                        f"found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels


def read_names(path: Path, what: str, key: str) -> tuple[str, ...]:
    names = read_pickle(path, what).get(key)
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"corrupted {what} file {path}: no {key} list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_cifar10(folder: Path, default_classes: tuple[str, ...]) -> Arrays:
    """`cifar-10-batches-py/`; batches.meta is optional (default_classes without it)."""
    missing = [n for n in CIFAR10_TRAIN + (CIFAR10_TEST,) if not (folder / n).is_file()]
    if missing:
        raise UserError(f"incomplete CIFAR-10 batches in {folder}: missing {', '.join(missing)}")
    meta = folder / "batches.meta"
    classes = read_names(meta, "CIFAR-10", "label_names") if meta.exists() else default_classes
    train = [read_images(folder / n, "CIFAR-10", "labels", len(classes)) for n in CIFAR10_TRAIN]
    test_x, test_y = read_images(folder / CIFAR10_TEST, "CIFAR-10", "labels", len(classes))
    return Arrays(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                  test_x, test_y, classes)


def read_cifar100(folder: Path, labels: str) -> Arrays:
    """`cifar-100-python/` with the fine (100) or coarse (20) labels; meta names the classes."""
    missing = [n for n in CIFAR100_FILES if not (folder / n).is_file()]
    if missing:
        raise UserError(f"incomplete CIFAR-100 in {folder}: missing {', '.join(missing)} "
                        f"(the official cifar-100-python/ holds train, test and meta)")
    classes = read_names(folder / "meta", "CIFAR-100", f"{labels}_label_names")
    key = f"{labels}_labels"
    train_x, train_y = read_images(folder / "train", "CIFAR-100", key, len(classes))
    test_x, test_y = read_images(folder / "test", "CIFAR-100", key, len(classes))
    return Arrays(train_x, train_y, test_x, test_y, classes)
