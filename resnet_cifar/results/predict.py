"""--mode predict: a checkpoint's top-k classes for image files and folders."""
from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from resnet_cifar.data.image_folders import IMAGE_SUFFIXES, as_rgb
from resnet_cifar.data.loader import Normalizer
from resnet_cifar.utils.atomic_files import atomic_path

BATCH = 500
# What a folder walk picks up; a file named on the command line is always tried, whatever its name.


@dataclass(frozen=True)
class Decoded:
    path: Path
    pixels: np.ndarray | None  # (3, S, S) uint8, None when unreadable
    original_size: tuple[int, int] | None = None  # (width, height) before resizing
    error: str | None = None

    @property
    def resized(self) -> bool:
        return self.original_size is not None and self.original_size != tuple(self.pixels.shape[:0:-1])


def collect_paths(inputs: Sequence[str]) -> list[Path]:
    """Files as given, and the image files under each folder (recursively, sorted)."""
    paths = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            paths.append(path)
    return paths


def decode(path: Path, size: int = 32) -> Decoded:
    """Any mode (RGBA, grayscale, palette, 16-bit) to RGB, any size resized to size x size (the
    model's; bilinear, with antialiasing, as torchvision's Resize does for PIL images)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            original = image.size
            rgb = as_rgb(image)
            if original != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        return Decoded(path, None, error="no such file")
    except IsADirectoryError:
        return Decoded(path, None, error="is a directory")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Decoded(path, None, error=f"not a readable image ({reason})")
    return Decoded(path, pixels, original)


def decode_all(paths: list[Path], size: int = 32) -> Iterator[Decoded]:
    """Decoded images in order; PIL releases the GIL while decoding, so threads use every core."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        yield from pool.map(lambda path: decode(path, size), paths, chunksize=64)


@dataclass(frozen=True)
class Prediction:
    path: Path
    classes: list[str]  # top-k, most probable first
    probabilities: list[float]
    resized_from: tuple[int, int] | None


@torch.no_grad()
def predict_images(model: torch.nn.Module, decoded: Iterator[Decoded], mean: Sequence[float], std: Sequence[float],
                   class_names: Sequence[str], top_k: int, device: torch.device,
                   on_error) -> Iterator[Prediction]:
    """Top-k predictions for each readable image, BATCH images a forward pass; on_error(decoded)
    is called for each unreadable one."""
    model.eval()
    normalizer = Normalizer(tuple(mean), tuple(std), device)  # the same arithmetic as training's
    batch: list[Decoded] = []

    def flush() -> Iterator[Prediction]:
        pixels = torch.from_numpy(np.stack([d.pixels for d in batch])).to(device)
        inputs = normalizer(pixels, channels_last=False)
        probabilities = model(inputs).float().softmax(1).cpu()
        top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
        for item, values, indices in zip(batch, top.values.tolist(), top.indices.tolist(), strict=True):
            yield Prediction(item.path, [class_names[i] for i in indices], values,
                             item.original_size if item.resized else None)
        batch.clear()

    for item in decoded:
        if item.pixels is None:
            on_error(item)
            continue
        batch.append(item)
        if len(batch) == BATCH:
            yield from flush()
    if batch:
        yield from flush()


def write_csv(path: Path, predictions: list[Prediction], top_k: int) -> None:
    """path, then class_1, prob_1, ..., class_k, prob_k, and the original size when resized."""
    header = ["path"] + [f"{kind}_{i}" for i in range(1, top_k + 1) for kind in ("class", "prob")] + ["resized_from"]
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for p in predictions:
            ranked = zip(p.classes, p.probabilities, strict=True)
            cells = [cell for name, prob in ranked for cell in (name, f"{prob:.6f}")]
            size = f"{p.resized_from[0]}x{p.resized_from[1]}" if p.resized_from else ""
            writer.writerow([str(p.path), *cells, size])
