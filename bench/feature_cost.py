"""What each training/evaluation feature costs, side by side in one process, against the plain path.

    python bench/feature_cost.py --data-dir data/cifar10-jpeg [--model resnet20] [--batch-size 500]

Loader rows: img/s of BatchLoader.epoch() alone (gather, crop, flip, normalise, plus the feature),
over --images training images a round. Step rows: img/s of the whole training path (train_one_epoch,
as main.py runs it) for --steps steps, plain and with --ema. Eval rows: evaluate() over the test
images with each --tta. Variants take turns inside each round; each figure is the median over
--rounds rounds. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_name, interleaved_img_per_s, medians  # noqa: E402

from resnet_cifar.config import TrainConfig  # noqa: E402
from resnet_cifar.data.augmentations import Augmentation  # noqa: E402
from resnet_cifar.data.datasets import Split, load_cifar10  # noqa: E402
from resnet_cifar.data.loader import BatchLoader  # noqa: E402
from resnet_cifar.models.registry import MODEL_NAMES  # noqa: E402
from resnet_cifar.results.evaluation import evaluate  # noqa: E402
from resnet_cifar.training.assembly import build_run  # noqa: E402
from resnet_cifar.training.checkpoint_state import EpochTotals  # noqa: E402
from resnet_cifar.training.epoch import train_one_epoch  # noqa: E402
from resnet_cifar.utils.progress import NoProgress  # noqa: E402

LOADER_VARIANTS = {
    "plain (crop zeros + flip)": Augmentation(),
    "reflect padding": Augmentation(pad_mode="reflect"),
    "cutout 12": Augmentation(cutout=12),
    "mixup 1.0": Augmentation(mixup=1.0),
    "cutmix 1.0": Augmentation(cutmix=1.0),
    "autoaugment": Augmentation(policy="autoaugment"),
    "randaugment": Augmentation(policy="randaugment"),
    "trivialaugment": Augmentation(policy="trivialaugment"),
}


def loader_variants(parts, split: Split, images: int) -> dict:
    """One loader per augmentation over the first `images` training images, a new epoch each call."""
    subset = Split(split.images[:images], split.labels[:images])
    base = parts.train_loader
    variants = {}
    for name, augmentation in LOADER_VARIANTS.items():
        loader = BatchLoader(subset, base.batch_size, base.device, base.normalizer, base.channels_last, train=True,
                             seed=0, augmentation=augmentation)
        epochs = itertools.count()

        def run(steps, loader=loader, epochs=epochs):
            batches = itertools.islice(loader.epoch(next(epochs)), steps)
            last = collections.deque(batches, maxlen=1)[0][0]  # drains the epoch, keeps the last batch
            last.sum().item()  # wait until the device has finished it

        variants[name] = (run, len(loader))
    return variants


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20", choices=MODEL_NAMES)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--images", type=int, default=10_000, help="training images per loader round")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round (plain and EMA)")
    parser.add_argument("--eval-images", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    data = load_cifar10(Path(args.data_dir), download=False)
    config = TrainConfig(model=args.model, batch_size=args.batch_size, device=args.device, quiet=True)
    parts = build_run(config, data)
    report = {"model": args.model, "batch_size": args.batch_size, "device": str(parts.device),
              "device_name": cpu_name() if parts.device.type == "cpu" else torch.cuda.get_device_name(parts.device),
              "precision": parts.precision, "channels_last": parts.channels_last, "torch": torch.__version__}

    loaders = loader_variants(parts, parts.train_loader.split, args.images)
    samples = interleaved_img_per_s({n: fn for n, (fn, _) in loaders.items()}, parts.device, args.rounds,
                                    steps_of=lambda n: loaders[n][1], batch_size=args.batch_size)
    report["loader_img_per_s"] = {k: round(v, 1) for k, v in medians(samples).items()}

    ema_parts = build_run(replace(config, ema=0.999), data)
    step_epochs = {"plain": itertools.count(), "ema 0.999": itertools.count()}

    def trainer(run_parts, name):
        def run(steps):
            train_one_epoch(run_parts.ctx, run_parts.train_loader, next(step_epochs[name]), 0, EpochTotals(), steps,
                            lambda: False, NoProgress)
        return run

    steps = {"plain": trainer(parts, "plain"), "ema 0.999": trainer(ema_parts, "ema 0.999")}
    for fn in steps.values():
        fn(1)  # warm-up
    samples = interleaved_img_per_s(steps, parts.device, args.rounds, steps_of=lambda n: args.steps,
                                    batch_size=args.batch_size)
    report["train_img_per_s"] = {k: round(v, 1) for k, v in medians(samples).items()}

    test = Split(data.test.images[:args.eval_images], data.test.labels[:args.eval_images])
    eval_loader = BatchLoader(test, min(500, len(test)), parts.device, parts.train_loader.normalizer,
                              parts.channels_last, train=False)
    evals = {tta: (lambda steps, tta=tta: evaluate(parts.ctx.model, eval_loader, parts.device, parts.precision, 10,
                                                   tta=tta))
             for tta in ("none", "flip", "flip-translate")}
    samples = interleaved_img_per_s(evals, parts.device, args.rounds, steps_of=lambda n: 1,
                                    batch_size=len(test))
    report["eval_img_per_s"] = {k: round(v, 1) for k, v in medians(samples).items()}

    plain_loader = report["loader_img_per_s"]["plain (crop zeros + flip)"]
    plain_train = report["train_img_per_s"]["plain"]
    print(f"{args.model}, batch {args.batch_size}, {report['device_name']}, {parts.precision}, "
          f"median of {args.rounds} rounds")
    print(f"{'loader variant':<28s} {'img/s':>10s} {'vs plain':>9s} {'ms per 1k images':>17s}")
    for name, value in report["loader_img_per_s"].items():
        print(f"{name:<28s} {value:>10.0f} {value / plain_loader:>8.2f}x {1000 * 1000 / value:>17.1f}")
    print(f"training path: plain {plain_train:.0f} img/s, with EMA {report['train_img_per_s']['ema 0.999']:.0f} "
          f"img/s ({report['train_img_per_s']['ema 0.999'] / plain_train:.3f}x)")
    print("evaluation: " + ", ".join(f"tta {k} {v:.0f} img/s" for k, v in report["eval_img_per_s"].items()))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
