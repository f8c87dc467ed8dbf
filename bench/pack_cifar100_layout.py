"""Pack an image-folder tree of 32x32 images into the official cifar-100-python/ layout.

    python bench/pack_cifar100_layout.py data/cifar10-jpeg data/cifar100-layout/cifar-100-python

Where real CIFAR-100 cannot be downloaded, this puts real images through the trainer's CIFAR-100
code path (--dataset cifar100: the pickled train/test/meta files, a 100-way classifier, reports
at 100 classes). The tree's classes become the first fine labels; meta names 100 fine classes,
the rest "unused_<i>" with no images, and one coarse class per fine class (coarse = fine). The
accuracy of such a run is that of the tree's own task, not CIFAR-100's.
"""
from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_cifar.data.image_folders import read_image_folder  # noqa: E402

FINE = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a train/<class>/ + test/<class>/ tree of 32x32 images")
    parser.add_argument("destination", type=Path, help="the cifar-100-python folder to write")
    args = parser.parse_args()
    tree = read_image_folder(args.source, required_size=32)
    if tree.test_x is None or len(tree.classes) > FINE:
        raise SystemExit(f"{args.source} needs a test/ folder and at most {FINE} classes")
    names = list(tree.classes) + [f"unused_{i}" for i in range(len(tree.classes), FINE)]
    args.destination.mkdir(parents=True, exist_ok=True)
    for split, images, labels in (("train", tree.train_x, tree.train_y), ("test", tree.test_x, tree.test_y)):
        order = np.random.RandomState(0).permutation(len(labels))  # the official files are shuffled
        batch = {"data": images[order].reshape(len(order), -1), "fine_labels": labels[order].tolist(),
                 "coarse_labels": labels[order].tolist(), "batch_label": split}
        with open(args.destination / split, "wb") as f:
            pickle.dump(batch, f, protocol=4)
    with open(args.destination / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": names}, f, protocol=4)
    print(f"wrote {args.destination}: {len(tree.train_y)} train, {len(tree.test_y)} test images, "
          f"{len(tree.classes)} of {FINE} classes used")


if __name__ == "__main__":
    main()
