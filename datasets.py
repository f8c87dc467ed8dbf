"""CIFAR-10 loading: the official batches, image-folder trees (with a cache), or a download.

Each split is held as one uint8 tensor (N, 3, 32, 32); loader.py batches and augments it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import socket
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from atomic_files import atomic_path
from errors import UserError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images (0-1 scale).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGE_SIZE = 32
BATCHES_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
# The image files a data folder or --mode predict reads (what Pillow decodes), by suffix, any case.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CACHE_NAME = ".cifar-cache.npz"
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # (N, 3, 32, 32) uint8
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
    test: Split
    classes: tuple[str, ...]
    source: str  # where it was read from, for logs and checkpoints


# ---------------------------------------------------------------------------------------------
# Reading the official pickled batches


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain containers only.

    CIFAR batches are pickles; a plain pickle.load would run whatever code a crafted file names.
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


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # any unpickling failure means the file is not a CIFAR batch
        raise UserError(f"corrupted CIFAR-10 file {path}: not a readable batch pickle ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"corrupted CIFAR-10 file {path}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise UserError(f"corrupted CIFAR-10 file {path}: missing 'data' or 'labels'")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        kind = data.dtype if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"corrupted CIFAR-10 file {path}: data must be a uint8 array, found {kind}")
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise UserError(
            f"corrupted CIFAR-10 file {path}: data has shape {tuple(data.shape)}, expected (N, 3072)"
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise UserError(f"corrupted CIFAR-10 file {path}: labels are not integers") from None
    if labels.shape != (data.shape[0],):
        raise UserError(
            f"corrupted CIFAR-10 file {path}: {labels.size} labels for {data.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(
            f"corrupted CIFAR-10 file {path}: labels must be in 0..{num_classes - 1}, "
            f"found {labels.min()}..{labels.max()}"
        )
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels


def _read_class_names(folder: Path) -> tuple[str, ...]:
    meta_path = folder / "batches.meta"
    if not meta_path.exists():
        return CIFAR10_CLASSES
    names = _read_pickle(meta_path).get("label_names")
    if not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"corrupted CIFAR-10 file {meta_path}: no label_names list")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _split_from_batches(folder: Path, names: tuple[str, ...], num_classes: int) -> Split:
    parts = [_read_batch(folder / name, num_classes) for name in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def read_batches(folder: Path) -> Dataset:
    """Read the official `cifar-10-batches-py` layout, validating structure, not MD5 sums.

    Re-packed copies (e.g. made from image folders) have other MD5 sums but the same structure.
    """
    folder = Path(folder)
    missing = [n for n in TRAIN_BATCHES + (TEST_BATCH,) if not (folder / n).is_file()]
    if missing:
        raise UserError(f"incomplete CIFAR-10 batches in {folder}: missing {', '.join(missing)}")
    classes = _read_class_names(folder)
    train = _split_from_batches(folder, TRAIN_BATCHES, len(classes))
    test = _split_from_batches(folder, (TEST_BATCH,), len(classes))
    return Dataset(train, test, classes, source=str(folder))


# ---------------------------------------------------------------------------------------------
# Reading an image-folder tree (DIR/train/<class>/*, DIR/test/<class>/*), cached after the first run


def _list_split(root: Path, split: str) -> dict[str, list[Path]]:
    split_dir = root / split
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = {}
    for name in classes:
        images = sorted(
            p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise UserError(f"image folder {split_dir / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files[name] = images
    return files


def _decode_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UserError(f"unreadable image {path}: {e}") from None
    if rgb.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        raise UserError(
            f"image {path} is {rgb.shape[1]}x{rgb.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    return rgb.transpose(2, 0, 1)


def _decode_split(files: dict[str, list[Path]], classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    paths = [p for name in classes for p in files[name]]
    labels = np.array([i for i, name in enumerate(classes) for _ in files[name]], dtype=np.int64)
    # PIL releases the GIL while decoding, so threads use every core without worker processes.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(_decode_image, paths, chunksize=256)))
    return images, labels


def _fingerprint(listing: dict[str, dict[str, list[Path]]]) -> str:
    digest = hashlib.sha256()
    for split, files in listing.items():
        for name, paths in files.items():
            for path in paths:
                stat = path.stat()
                digest.update(f"{split}/{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_path(root: Path) -> Path:
    """The cache lives beside the images when that folder is writable, else in ~/.cache."""
    if os.access(root, os.W_OK):
        return root / CACHE_NAME
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "resnet-cifar" / f"{key}.npz"


def _load_cache(path: Path, fingerprint: str) -> dict | None:
    """The cached arrays, or None for a missing, stale or damaged cache (rebuilt, never trusted).

    A truncated file fails as a bad zip; a flipped byte fails zipfile's CRC-32 check when the
    member is read, which is why every array is read here, inside the try.
    """
    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["fingerprint"]) != fingerprint:
                return None
            arrays = {k: cache[k] for k in cache.files}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    for split in ("train", "test"):
        images, labels = arrays.get(f"{split}_x"), arrays.get(f"{split}_y")
        if (images is None or labels is None or images.dtype != np.uint8 or images.ndim != 4
                or images.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE) or labels.shape != (len(images),)):
            return None
    return arrays


def _save_cache(path: Path, arrays: dict) -> None:
    """Write atomically (a reader sees the old cache or the whole new one); a failure is ignored,
    since the cache only saves time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError:
        pass


@contextlib.contextmanager
def _cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the cache, so that of several processes starting at once one
    decodes and writes while the others wait, then read its cache. No lock where the folder is not
    writable or the platform has no flock: then each process decodes for itself."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_name(path.name + ".lock"), "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_image_folder(root: Path) -> Dataset:
    """Read DIR/train/<class>/* and DIR/test/<class>/*; class order is the sorted folder names."""
    root = Path(root)
    listing = {split: _list_split(root, split) for split in ("train", "test")}
    classes = tuple(listing["train"])
    if len(classes) < 2:
        raise UserError(f"image folder {root / 'train'} needs at least 2 class folders, found {len(classes)}")
    if tuple(listing["test"]) != classes:
        missing = sorted(set(classes) ^ set(listing["test"]))
        raise UserError(
            f"image folders {root / 'train'} and {root / 'test'} disagree on classes: "
            f"{', '.join(missing)} missing from one of them"
        )
    fingerprint = _fingerprint(listing)
    cache_path = _cache_path(root)
    cached = _load_cache(cache_path, fingerprint)
    if cached is None:
        with _cache_lock(cache_path):
            cached = _load_cache(cache_path, fingerprint)  # another process may have written it meanwhile
            if cached is None:
                train_x, train_y = _decode_split(listing["train"], classes)
                test_x, test_y = _decode_split(listing["test"], classes)
                cached = dict(
                    fingerprint=np.array(fingerprint),
                    train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                )
                _save_cache(cache_path, cached)
    return Dataset(
        Split(torch.from_numpy(cached["train_x"]), torch.from_numpy(cached["train_y"])),
        Split(torch.from_numpy(cached["test_x"]), torch.from_numpy(cached["test_y"])),
        classes,
        source=str(root),
    )


# ---------------------------------------------------------------------------------------------
# Finding the data


def _download(data_dir: Path) -> None:
    from torchvision.datasets import CIFAR10

    # urllib has no timeout by default: without one, a machine with no network can hang for minutes.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        CIFAR10(str(data_dir), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def load_cifar10(data_dir: Path, download: bool = True) -> Dataset:
    """Find CIFAR-10 in data_dir: official batches, then an image-folder tree, then download."""
    data_dir = Path(data_dir)
    for folder in (data_dir / BATCHES_FOLDER, data_dir):
        if (folder / TRAIN_BATCHES[0]).exists():
            return read_batches(folder)
    if (data_dir / "train").is_dir() and (data_dir / "test").is_dir():
        return read_image_folder(data_dir)
    looked_for = (
        f"looked for {data_dir / BATCHES_FOLDER} and image folders {data_dir}/train/<class>/, "
        f"{data_dir}/test/<class>/"
    )
    if not download:
        raise UserError(f"CIFAR-10 not found: {looked_for}; point --data-dir at a copy")
    try:
        _download(data_dir)
    except Exception as e:  # no network, a proxy, a full disk: all end the same way for the user
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"CIFAR-10 not found and download failed ({reason}): {looked_for}; "
            f"point --data-dir at a copy"
        ) from None
    return read_batches(data_dir / BATCHES_FOLDER)


def split_validation(train: Split, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Hold out val_size training images, chosen by a permutation seeded with seed."""
    if val_size == 0:
        return train, None
    if not 0 < val_size < len(train):
        raise UserError(f"--val-size must be between 0 and {len(train) - 1}, got {val_size}")
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    return train.subset(order[val_size:]), train.subset(order[:val_size])
