"""The benchmark copy of CIFAR-10 from the official data: every image stored as JPEG at quality 75 in
an image-folder tree, the copy the figures of docs/results.md and bench/README.md were measured on.

    python bench/make_jpeg_copy.py data/cifar-10-batches-py data/cifar10-jpeg

It reads the official `cifar-10-batches-py` folder (torchvision's download) and writes

    DST/train/<class>/0000.jpg … 4999.jpg   (5,000 a class, in the official order)
    DST/test/<class>/0000.jpg … 0999.jpg    (1,000 a class)

with Pillow's JPEG encoder at quality 75 (its default 4:2:0 chroma subsampling). Training and
testing on this copy cost accuracy against the official PNG-exact data (docs/results.md says how
much where it was measured); compare runs on the same copy. `python main.py --data-dir DST` reads it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_cifar.data.cifar_pickles import read_cifar10  # noqa: E402
from resnet_cifar.data.datasets import CIFAR10_CLASSES  # noqa: E402

QUALITY = 75


def write_split(images, labels, classes: tuple[str, ...], folder: Path) -> int:
    """Each image as folder/<class>/NNNN.jpg, numbered within its class in the given order."""
    from PIL import Image

    counts = dict.fromkeys(range(len(classes)), 0)
    for image, label in zip(images, labels, strict=True):
        label = int(label)
        target = folder / classes[label] / f"{counts[label]:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.transpose(1, 2, 0)).save(target, quality=QUALITY)
        counts[label] += 1
    return sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the official cifar-10-batches-py folder")
    parser.add_argument("destination", type=Path, help="a new or empty folder for the tree")
    args = parser.parse_args(argv)
    if args.destination.exists() and any(args.destination.iterdir()):
        print(f"error: {args.destination} is not empty; give a new or empty folder", file=sys.stderr)
        return 2
    arrays = read_cifar10(args.source, CIFAR10_CLASSES)
    train = write_split(arrays.train_x, arrays.train_y, arrays.classes, args.destination / "train")
    test = write_split(arrays.test_x, arrays.test_y, arrays.classes, args.destination / "test")
    print(f"wrote {train} training and {test} test images to {args.destination} (JPEG quality {QUALITY})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
