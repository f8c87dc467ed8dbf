"""Training throughput, side by side in one process: the real path against its parts and a baseline.

    python bench/throughput.py --model resnet18 --data-dir data/cifar10-jpeg [--device cpu] [--steps 5]

(a) train: the training path exactly as main.py runs it (train_one_epoch: loader, augmentation,
    precision, layout, step, NaN checks);
(b) compute: the same model, optimizer and precision on one batch already in memory;
(c) loader: the batch loader alone (gather, crop, flip, normalise), one whole epoch a round;
(d) classic: torchvision transforms in a DataLoader with 2 worker processes, fp32 NCHW, as in
    kuangliu/pytorch-cifar; same model and batch size;
plus eval: evaluate() over test batches.
Variants run interleaved for --rounds rounds so that drift on a noisy machine hits all of them;
each figure is the median over rounds. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classic_baseline import classic_loader, classic_setup, classic_step  # noqa: E402
from common import cpu_name, interleaved_img_per_s, medians  # noqa: E402

from resnet_cifar.config import TrainConfig  # noqa: E402
from resnet_cifar.data.datasets import load_cifar10  # noqa: E402
from resnet_cifar.models.registry import MODEL_NAMES  # noqa: E402
from resnet_cifar.results.evaluation import evaluate  # noqa: E402
from resnet_cifar.training.assembly import build_run  # noqa: E402
from resnet_cifar.training.checkpoint_state import EpochTotals  # noqa: E402
from resnet_cifar.training.epoch import train_one_epoch  # noqa: E402
from resnet_cifar.training.step import train_step  # noqa: E402
from resnet_cifar.utils.progress import NoProgress  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", choices=MODEL_NAMES)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the classic baseline")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-classic", action="store_true", help="skip the baseline (e.g. on a GPU machine)")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the evaluation pass (with --compile it would compile the eval graph too)")
    args = parser.parse_args(argv)

    data = load_cifar10(Path(args.data_dir), download=False)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # several runs may share one process (bench/gpu_suite.py)
    config = TrainConfig(model=args.model, batch_size=args.batch_size, device=args.device,
                         precision=args.precision, compile=args.compile, epochs=1000)
    parts = build_run(config, data)
    device, loader = parts.device, parts.train_loader
    no_stop = lambda: False  # noqa: E731
    position = {"epoch": 0, "step": 0}

    def real_path(steps: int) -> None:
        # Exactly `steps` steps, on into the next epoch where this one ends (large batches have
        # few steps an epoch), as the trainer would.
        while steps > 0:
            if position["step"] == len(loader):
                position["epoch"], position["step"] = position["epoch"] + 1, 0
            outcome = train_one_epoch(parts.ctx, loader, position["epoch"], position["step"], EpochTotals(),
                                      steps, no_stop, NoProgress)
            steps -= outcome.steps_done - position["step"]
            position["step"] = outcome.steps_done

    fixed_inputs, fixed_targets = next(loader.epoch(10_000))

    def compute_only(steps: int) -> None:
        parts.ctx.model.train()
        for _ in range(steps):
            train_step(parts.ctx, fixed_inputs, fixed_targets, config.lr)

    loader_epochs = itertools.count(20_000)

    def loader_only(steps: int) -> None:
        # Fresh epochs (timed: one whole epoch a round): the loader prepares batches in chunks
        # and draws each epoch's plan at its start, so a whole epoch is the honest unit.
        while steps > 0:
            for inputs, _ in itertools.islice(loader.epoch(next(loader_epochs)), steps):  # noqa: B007 (the last batch is read below)
                steps -= 1
        inputs.sum().item()  # wait for the device to finish the work queued above

    variants = {"train": real_path, "compute": compute_only, "loader": loader_only}
    if not args.no_classic:
        classic_model, classic_optimizer, classic_criterion = classic_setup(args.model, device)
        classic_batches = _forever(classic_loader(data.train.images, data.train.labels, args.batch_size,
                                                  args.workers))

        def classic(steps: int) -> None:
            classic_model.train()
            for _ in range(steps):
                inputs, targets = next(classic_batches)
                classic_step(classic_model, classic_optimizer, classic_criterion,
                             inputs.to(device, non_blocking=True), targets.to(device))

        variants["classic"] = classic

    def settle(name: str) -> None:
        if name == "classic":
            # Its workers go on prefetching after the steps taken; let them finish so that
            # their CPU use is not charged to the variant timed next.
            time.sleep(1.0)

    for name, fn in variants.items():
        fn(args.warmup)
        settle(name)

    samples = interleaved_img_per_s(variants, device, args.rounds,
                                    lambda name: len(loader) if name == "loader" else args.steps,
                                    args.batch_size, after=settle)
    eval_result = None
    for _ in range(0 if args.no_eval else 2 if device.type == "cuda" else 1):
        # On CUDA the first pass also autotunes cuDNN for the eval shapes: time the second.
        eval_result = evaluate(parts.ctx.model, parts.eval_loaders["test"], device, parts.precision,
                               config.num_classes)

    img_s = medians(samples)
    report = {
        "model": args.model, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "precision": parts.precision, "channels_last": parts.channels_last, "compile": args.compile,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
        "img_per_s": {k: round(v, 1) for k, v in img_s.items()},
        "img_per_s_rounds": {k: [round(v, 1) for v in vs] for k, vs in samples.items()},
        "eval_img_per_s": None if eval_result is None else round(eval_result.n / eval_result.seconds, 1),
        "ratio_train_over_compute": round(img_s["train"] / img_s["compute"], 3),
        "peak_rss_mib_this_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    # Ratios inside each round too: the two variants of one round ran seconds apart.
    report["ratio_train_over_compute_per_round"] = [
        round(a / b, 3) for a, b in zip(samples["train"], samples["compute"], strict=True)]
    if "classic" in img_s:
        report["ratio_train_over_classic"] = round(img_s["train"] / img_s["classic"], 3)
        report["ratio_train_over_classic_per_round"] = [
            round(a / d, 3) for a, d in zip(samples["train"], samples["classic"], strict=True)]
    if device.type == "cuda":
        report["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    print_table(report)
    print(json.dumps(report))
    return report


def _forever(loader):
    while True:
        yield from loader


def print_table(report: dict) -> None:
    print(f"{report['model']} on {report['device_name']} ({report['device']}), {report['precision']}"
          f"{' channels_last' if report['channels_last'] else ''}, batch {report['batch_size']}, "
          f"{report['threads']} threads")
    print(f"{'variant':<10}{'img/s (median)':>16}  rounds")
    for name, value in report["img_per_s"].items():
        print(f"{name:<10}{value:>16.1f}  {report['img_per_s_rounds'][name]}")
    if report["eval_img_per_s"] is not None:
        print(f"{'eval':<10}{report['eval_img_per_s']:>16.1f}")
    print(f"(a)/(b) train/compute = {report['ratio_train_over_compute']:.3f}")
    if "ratio_train_over_classic" in report:
        print(f"(a)/(d) train/classic = {report['ratio_train_over_classic']:.3f}")


if __name__ == "__main__":
    main()
