"""The classic CIFAR pipeline (kuangliu/pytorch-cifar style), kept here only as a baseline.

Per-image PIL transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize)
in a DataLoader with worker processes, fp32 NCHW. bench/throughput.py times it beside the real
path; run on its own it trains --steps steps, so bench/memory.py can measure its footprint:

    python bench/classic_baseline.py --model resnet18 --data-dir data/cifar10-jpeg --steps 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, load_cifar10  # noqa: E402
from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402


class ClassicDataset(torch.utils.data.Dataset):
    """torchvision's CIFAR10 behaviour: (N, 32, 32, 3) uint8 in memory, a PIL image per item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def classic_loader(train_images: torch.Tensor, train_labels: torch.Tensor, batch_size: int,
                   workers: int) -> torch.utils.data.DataLoader:
    import torchvision.transforms as T

    transform = T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
    ])
    images = train_images.permute(0, 2, 3, 1).numpy().copy()  # (N, 32, 32, 3) as torchvision keeps it
    dataset = ClassicDataset(images, train_labels.numpy(), transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def classic_setup(model_name: str, device: torch.device):
    """(model, optimizer, criterion) as the classic scripts build them: fp32, plain SGD."""
    model = modeltype(model_name).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    return model, optimizer, torch.nn.CrossEntropyLoss()


def classic_step(model, optimizer, criterion, inputs, targets) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = criterion(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="the classic per-image pipeline, for comparison")
    parser.add_argument("--model", default="resnet18", choices=MODEL_NAMES)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    data = load_cifar10(Path(args.data_dir), download=False)
    loader = classic_loader(data.train.images, data.train.labels, args.batch_size, args.workers)
    del data
    model, optimizer, criterion = classic_setup(args.model, torch.device("cpu"))
    model.train()
    started, done = time.perf_counter(), 0
    while done < args.steps:
        for inputs, targets in loader:
            classic_step(model, optimizer, criterion, inputs, targets)
            done += 1
            if done == args.steps:
                break
    print(f"classic: {done} steps, {done * args.batch_size / (time.perf_counter() - started):.1f} img/s")


if __name__ == "__main__":
    main()
