"""Evaluation speed against the forward batch: why TTA runs its views as separate passes.

    python bench/eval_batch.py [--data-dir data/cifar10-jpeg] [--model resnet20] [--batches 250 500 1000]
        [--precision bf16 --channels-last]

Forward rows: img/s of the bare model (eval mode, no_grad) on --images test images cut into
batches of each size. Evaluation rows: evaluate() (the loop training and --mode eval use) over the
same images at each --eval-batch, with each TTA. Variants take turns inside each round; each figure
is the median over --rounds rounds. Without --data-dir the images are random (speed only).
Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_name, interleaved_img_per_s, medians  # noqa: E402

from resnet_cifar.data.augmentations import TTA_MODES  # noqa: E402
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split, load_cifar10  # noqa: E402
from resnet_cifar.data.loader import BatchLoader, Normalizer  # noqa: E402
from resnet_cifar.models.registry import MODEL_NAMES, modeltype  # noqa: E402
from resnet_cifar.results.evaluation import evaluate  # noqa: E402
from resnet_cifar.utils.devices import autocast  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", choices=MODEL_NAMES, default="resnet20")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batches", type=int, nargs="+", default=[250, 500, 1000], help="forward batch sizes")
    parser.add_argument("--eval-batch", type=int, nargs="+", default=[250, 500], help="evaluation loader batches")
    parser.add_argument("--tta", choices=TTA_MODES, nargs="+", default=["none", "flip-translate"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast dtype on the CPU")
    parser.add_argument("--channels-last", action="store_true", help="model and batches in channels_last")
    return parser.parse_args(argv)


def evaluation_images(data_dir: str | None, count: int) -> Split:
    if data_dir is None:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
        return Split(images, torch.randint(0, 10, (count,), generator=generator))
    test = load_cifar10(Path(data_dir), download=False).test
    return Split(test.images[:count], test.labels[:count])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = modeltype(args.model, 10).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    split = evaluation_images(args.data_dir, args.images)
    normalizer = Normalizer(CIFAR10_MEAN, CIFAR10_STD, device)
    inputs = normalizer(split.images, args.channels_last)

    def forward(batch: int):
        def run(steps: int) -> None:
            with torch.no_grad(), autocast(device, args.precision):
                for start in range(0, len(inputs), batch):
                    model(inputs[start:start + batch])
        return run

    forwards = {f"forward batch {b}": forward(b) for b in args.batches}
    for fn in forwards.values():
        fn(1)  # warm-up
    samples = interleaved_img_per_s(forwards, device, args.rounds, steps_of=lambda name: 1, batch_size=len(inputs))
    report = {"model": args.model, "device_name": cpu_name(), "threads": torch.get_num_threads(),
              "precision": args.precision, "channels_last": args.channels_last,
              "images": len(inputs), "forward_img_per_s": {k: round(v, 1) for k, v in medians(samples).items()}}

    def evaluation(batch: int, tta: str):
        loader = BatchLoader(split, batch, device, normalizer, args.channels_last, train=False)
        return lambda steps: evaluate(model, loader, device, args.precision, 10, tta=tta)

    evals = {f"evaluate batch {b}, tta {tta}": evaluation(b, tta) for b in args.eval_batch for tta in args.tta}
    samples = interleaved_img_per_s(evals, device, args.rounds, steps_of=lambda name: 1, batch_size=len(inputs))
    report["eval_img_per_s"] = {k: round(v, 1) for k, v in medians(samples).items()}

    layout = " channels_last" if args.channels_last else ""
    print(f"{args.model} on {report['device_name']}, {report['threads']} threads, {args.precision}{layout}, "
          f"{len(inputs)} images, "
          f"median of {args.rounds} rounds")
    for name, value in {**report["forward_img_per_s"], **report["eval_img_per_s"]}.items():
        print(f"{name:<40s} {value:>9.0f} img/s  {len(inputs) / value:>7.2f} s")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
