"""Image-folder trees: DIR/train/<class>/* and, optionally, DIR/test/<class>/*.

The images are decoded once (resized to --image-size where asked) into a cache beside them, with
the training images' per-channel mean and standard deviation; the cache is rebuilt when a file of
the tree changes, and never trusted when damaged.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_cifar.errors import UserError
from resnet_cifar.utils.atomic_files import WriteError, atomic_path

# The image files a data folder or --mode predict reads (what Pillow decodes), by suffix, any case.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
CACHE_NAME = ".cifar-cache.npz"  # images at their own size; resized ones go to .cifar-cache-<N>px.npz
# Part of every fingerprint: a cache written in an older layout is rebuilt rather than misread.
CACHE_FORMAT = "2"
STATS_CHUNK = 4096  # images a step when summing pixels for the mean and std


@dataclass(frozen=True)
class FolderArrays:
    """A tree as decoded: uint8 images (N, 3, S, S) and int64 labels per split (test: None when
    the tree has no test/ folder), the class names (sorted folder names), and the training
    images' per-channel mean and std on the 0-1 scale."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None
    test_y: np.ndarray | None
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise UserError(f"cannot read image folder {folder}: {e.strerror or e}") from None


def _image_file(path: Path) -> Path:
    """path, when it is a readable, non-empty file; else one line naming it."""
    if path.is_symlink() and not path.exists():
        raise UserError(f"image {path} is a broken link (to {os.readlink(path)})")
    if not path.is_file():
        raise UserError(f"image {path} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"image {path} is an empty file")
    return path


def list_split(root: Path, split: str) -> dict[str, list[Path]]:
    """{class name: its image files}, both sorted."""
    split_dir = root / split
    classes = sorted(d.name for d in _entries(split_dir) if d.is_dir() and not d.name.startswith("."))
    files = {}
    for name in classes:
        images = sorted(_image_file(p) for p in _entries(split_dir / name) if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"image folder {split_dir / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        files[name] = images
    return files



def as_rgb(image):
    """An 8-bit RGB copy of a PIL image of any mode. Images of more than 8 bits a channel (16-bit
    grayscale "I;16*", 32-bit "I", float "F") are scaled to 0-255 first: Pillow's own convert
    clips them, which turns most 16-bit pictures white."""
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.float64) / 257.0  # the 16-bit range onto the 8-bit one
    elif image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        values = np.nan_to_num(values) * (255.0 if finite.size and finite.max() <= 1.0 else 1.0)
    else:
        return image.convert("RGB")
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray).convert("RGB")

def decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """(3, H, W) uint8 RGB; resized to size x size (bilinear, antialiased as Pillow does) when
    size is given and the image is not that size already."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = as_rgb(image)
            if size is not None and rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"unreadable image {path}: {e}") from None
    return pixels.transpose(2, 0, 1)


def decode_split(files: dict[str, list[Path]], classes: tuple[str, ...],
                 size: int | None) -> tuple[list[Path], list[np.ndarray], np.ndarray]:
    """Every image of a split (paths, pixels and labels in class order), decoded on all cores:
    Pillow releases the GIL while decoding, so threads do without worker processes."""
    paths = [p for name in classes for p in files[name]]
    labels = np.array([i for i, name in enumerate(classes) for _ in files[name]], dtype=np.int64)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: decode_image(p, size), paths, chunksize=256))
    return paths, images, labels


def check_one_size(paths: list[Path], images: list[np.ndarray], required: int | None = None) -> None:
    """Refuse images of several sizes, naming one of each of the first two, or any image that is
    not required x required."""
    first = images[0].shape
    for path, image in zip(paths, images, strict=True):
        if required is not None and image.shape[1:] != (required, required):
            raise UserError(f"image {path} is {image.shape[2]}x{image.shape[1]}, expected {required}x{required}")
        if image.shape != first:
            raise UserError(
                f"the images differ in size: {paths[0]} is {first[2]}x{first[1]}, {path} is "
                f"{image.shape[2]}x{image.shape[1]}; pass --image-size N to resize them all to NxN"
            )


def channel_stats(images: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) standard deviation of uint8 images, on the 0-1 scale."""
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(images), STATS_CHUNK):
        chunk = images[start:start + STATS_CHUNK].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk * chunk).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def fingerprint(listing: dict[str, dict[str, list[Path]]], size: int | None) -> str:
    digest = hashlib.sha256(f"format {CACHE_FORMAT}, size {size}\n".encode())
    for split, files in listing.items():
        for name, paths in files.items():
            for path in paths:
                stat = path.stat()
                digest.update(f"{split}/{name}/{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_path(root: Path, size: int | None) -> Path:
    """The cache lives beside the images when that folder is writable, else in ~/.cache."""
    name = CACHE_NAME if size is None else f".cifar-cache-{size}px.npz"
    if os.access(root, os.W_OK):
        return root / name
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "resnet-cifar" / f"{key}{name}"


def load_cache(path: Path, expected: str) -> dict | None:
    """The cached arrays, or None for a missing, stale or damaged cache (rebuilt, never trusted).

    A truncated file fails as a bad zip; a flipped byte fails zipfile's CRC-32 check when the
    member is read, which is why every array is read here, inside the try.
    """
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as cache:
            if str(cache["fingerprint"]) != expected:
                return None
            arrays = {k: cache[k] for k in cache.files}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    if arrays.get("mean", np.zeros(0)).shape != (3,) or arrays.get("std", np.zeros(0)).shape != (3,):
        return None
    shape = arrays["train_x"].shape[1:] if "train_x" in arrays else None
    for split in ("train", "test"):
        images, labels = arrays.get(f"{split}_x"), arrays.get(f"{split}_y")
        if split == "test" and images is None and labels is None:
            continue  # a tree without test/
        if (images is None or labels is None or images.dtype != np.uint8 or images.ndim != 4
                or images.shape[1:] != shape or shape[0] != 3 or shape[1] != shape[2]
                or labels.shape != (len(images),)):
            return None
    return arrays


def save_cache(path: Path, arrays: dict) -> None:
    """Write atomically (a reader sees the old cache or the whole new one). A failure is one note,
    not an error: the cache only saves time, and the images are decoded again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    except OSError as e:
        reason = str(e) if isinstance(e, WriteError) else f"cannot write {path}: {e.strerror or e}"
        print(f"note: {reason}; the images are decoded again next time", file=sys.stderr)


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
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


def list_tree(root: Path) -> tuple[tuple[str, ...], dict[str, dict[str, list[Path]]]]:
    """The class names and every split's files; test/ is optional, and must hold the same classes."""
    listing = {"train": list_split(root, "train")}
    classes = tuple(listing["train"])
    if len(classes) < 2:
        raise UserError(f"image folder {root / 'train'} needs at least 2 class folders, found {len(classes)}")
    if (root / "test").is_dir():
        listing["test"] = list_split(root, "test")
        if tuple(listing["test"]) != classes:
            missing = sorted(set(classes) ^ set(listing["test"]))
            raise UserError(
                f"image folders {root / 'train'} and {root / 'test'} disagree on classes: "
                f"{', '.join(missing)} missing from one of them"
            )
    return classes, listing


def decode_tree(classes: tuple[str, ...], listing: dict[str, dict[str, list[Path]]], size: int | None,
                key: str, required_size: int | None = None) -> dict:
    """The cache's arrays for a tree: every split decoded, sizes checked, mean and std computed."""
    decoded = {split: decode_split(files, classes, size) for split, files in listing.items()}
    check_one_size([path for paths, _, _ in decoded.values() for path in paths],
                   [image for _, images, _ in decoded.values() for image in images], required_size)
    arrays: dict = {"fingerprint": np.array(key)}
    for split, (_, images, labels) in decoded.items():
        arrays[f"{split}_x"], arrays[f"{split}_y"] = np.stack(images), labels
    arrays["mean"], arrays["std"] = (np.array(v) for v in channel_stats(arrays["train_x"]))
    return arrays


def read_image_folder(root: Path, image_size: int | None = None, required_size: int | None = None) -> FolderArrays:
    """Read DIR/train/<class>/* (and DIR/test/<class>/* where it exists) through the cache;
    image_size: resize every image to it; required_size: refuse images of another size (CIFAR's 32)."""
    root = Path(root)
    classes, listing = list_tree(root)
    key = fingerprint(listing, image_size)
    path = cache_path(root, image_size)
    cached = load_cache(path, key)
    if cached is None:
        with cache_lock(path):
            cached = load_cache(path, key)  # another process may have written it meanwhile
            if cached is None:
                cached = decode_tree(classes, listing, image_size, key, required_size)
                save_cache(path, cached)
    return FolderArrays(cached["train_x"], cached["train_y"], cached.get("test_x"), cached.get("test_y"), classes,
                        tuple(float(v) for v in cached["mean"]), tuple(float(v) for v in cached["std"]))
