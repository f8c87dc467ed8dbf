"""Evaluation: a model over a split (used each epoch), and a saved checkpoint on the test set."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from resnet_cifar.config import EvalConfig
from resnet_cifar.data.augmentations import looked_again, tta_logits
from resnet_cifar.data.datasets import Dataset, DataSpec, Split, check_matches, load_dataset, split_validation
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import modeltype
from resnet_cifar.models.techniques import model_options
from resnet_cifar.results.metrics import Predictions, build_report, write_json, write_per_class_csv
from resnet_cifar.results.plots import plot_calibration, plot_confusion, plot_mistakes
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.utils.devices import autocast, resolve_device, resolve_precision
from resnet_cifar.utils.distributed import Distributed


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    n: int
    per_class_correct: list[int]
    per_class_total: list[int]
    seconds: float
    predictions: Predictions | None = None  # every image's logits, with keep_predictions

    def per_class_accuracy(self, classes: Iterable[str]) -> dict[str, float]:
        return {
            name: (c / t if t else float("nan"))
            for name, c, t in zip(classes, self.per_class_correct, self.per_class_total, strict=True)
        }


class EvalInterrupted(Exception):
    pass


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: BatchLoader,
    device: torch.device,
    precision: str,
    num_classes: int,
    should_stop: Callable[[], bool] = lambda: False,
    tta: str = "none",
    dist: Distributed | None = None,
    tta_fraction: float = 0.25,
    keep_predictions: bool = False,
) -> EvalResult:
    """Loss, accuracy and per-class counts over every image of the loader's split, from the
    logits of the views `tta` names (augmentations.tta_logits, tta_fraction for its selective
    views); with keep_predictions also the
    logits themselves (for the final report, which then needs no second pass).

    Under torchrun the loader holds this process's share and the sums are added over the ranks
    (the kept logits are gathered in rank order: the shares are contiguous, so that is the split's).
    should_stop may be a collective, so every rank calls it once per batch of the longest share.
    """
    dist = dist if dist is not None else Distributed()
    model.eval()
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    class_correct = torch.zeros(num_classes, dtype=torch.long, device=device)
    class_total = torch.zeros(num_classes, dtype=torch.long, device=device)
    kept_logits, kept_labels = [], []
    for logits, targets in _split_logits(model, loader, device, precision, tta, tta_fraction, dist, should_stop):
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
        hits = (logits.argmax(1) == targets).long()
        class_correct.index_add_(0, targets, hits)
        class_total.index_add_(0, targets, torch.ones_like(hits))
        if keep_predictions:
            kept_logits.append(logits.float().cpu())
            kept_labels.append(targets.cpu())
    dist.sum_(loss_sum, class_correct, class_total)
    n = int(class_total.sum())
    predictions = None
    if keep_predictions:
        shares = dist.gather_objects((kept_logits, kept_labels))
        predictions = Predictions(torch.cat([t for logits, _ in shares for t in logits]),
                                  torch.cat([t for _, labels in shares for t in labels]))
    return EvalResult(
        loss=float(loss_sum) / max(1, n),
        accuracy=int(class_correct.sum()) / max(1, n),
        n=n,
        per_class_correct=class_correct.tolist(),
        per_class_total=class_total.tolist(),
        seconds=time.perf_counter() - started,
        predictions=predictions,
    )


def _batches(loader: BatchLoader, dist: Distributed, should_stop: Callable[[], bool]):
    """The loader's batches; every rank calls should_stop (maybe a collective) once per batch of the
    longest share, and a rank whose share ran out one batch early skips its turn."""
    batches = loader.epoch()
    for _ in range(dist.max_int(len(loader))):
        if should_stop():
            raise EvalInterrupted()
        batch = next(batches, None)
        if batch is not None:
            yield batch


def _split_logits(model: nn.Module, loader: BatchLoader, device: torch.device, precision: str, tta: str,
                  fraction: float, dist: Distributed, should_stop: Callable[[], bool]):
    """(logits, labels) of each batch with the views `tta` names. Selective TTA ranks the whole split
    (every rank's share) by the plain pass's top probability, as the record script ranks its test
    set, so which images it looks at again does not depend on the evaluation batch."""
    if tta != "selective":
        for inputs, targets in _batches(loader, dist, should_stop):
            with autocast(device, precision):
                logits = tta_logits(model, inputs, tta)
            yield logits, targets
        return
    plain = []
    for inputs, targets in _batches(loader, dist, should_stop):
        with autocast(device, precision):
            plain.append((model(inputs), targets))
    confidence = [logits.float().softmax(1).amax(1) for logits, _ in plain]
    shares = dist.gather_objects([c.cpu() for c in confidence])  # every rank ranks the whole split
    everyone = torch.cat([c for share in shares for c in share] or [torch.zeros(0)])
    count = int(len(everyone) * fraction)
    threshold = everyone.kthvalue(count).values.item() if count > 0 else -1.0
    for (inputs, _), (logits, targets), sure in zip(_batches(loader, dist, should_stop), plain, confidence,
                                                    strict=True):
        with autocast(device, precision):
            logits = looked_again(model, inputs, logits, (sure <= threshold).nonzero().flatten())
        yield logits, targets


def load_model(payload: dict, source: Path, weights_kind: str = "raw") -> torch.nn.Module:
    """Rebuild the checkpoint's model and load its weights ("raw", or "ema": the moving
    average), naming any mismatch."""
    name, num_classes = payload["model_name"], payload["num_classes"]
    model = modeltype(name, num_classes, **model_options(payload.get("config", {})))
    expected = model.state_dict()
    if weights_kind == "ema":
        if payload.get("ema_state") is None:
            raise UserError(f"--weights ema: checkpoint {source} holds no moving average (train with --ema DECAY); "
                            f"use --weights raw")
        weights = payload["ema_state"]
    else:
        weights = payload["model_state"]
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {source} does not hold {name} weights: "
            f"{len(missing)} missing (e.g. {missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})"
        )
    for key, tensor in expected.items():
        if weights[key].shape != tensor.shape:
            raise UserError(
                f"checkpoint {source} does not fit {name} with {num_classes} classes: {key} has shape "
                f"{tuple(weights[key].shape)} in the file but {tuple(tensor.shape)} in the model"
            )
    model.load_state_dict(weights)
    return model


def choose_split(config: dict, data: Dataset, name: str) -> Split:
    """The test set, or the validation images a run (its config as a dict) held out (same size and seed)."""
    if name == "test":
        if data.test is None:
            raise UserError(f"--split test: {data.source} has no test/ folder; use --split val (the images the "
                            f"run held out)")
        return data.test
    if not config.get("val_size"):
        raise UserError("--split val: this run was trained without --val-size, so it has no validation images; "
                        "use --split test")
    return split_validation(data.train, config["val_size"], config["seed"])[1]


def check_model_name(payload: dict, expected_model: str | None) -> None:
    """Refuse a typed --model that is not the checkpoint's."""
    if expected_model is not None and expected_model != payload["model_name"]:
        raise UserError(f"--model {expected_model} does not match the checkpoint's model {payload['model_name']}")


def run_precision(device: torch.device, config: EvalConfig, payload: dict) -> tuple[str, bool]:
    """The precision and layout to evaluate in: those the run trained and reported in, on the same
    kind of device, unless --precision or --channels-last is typed; else what `auto` picks here."""
    trained = payload.get("resolved")
    if (config.precision == "auto" and config.channels_last is None and trained is not None
            and trained["device_type"] == device.type):
        return trained["precision"], trained["channels_last"]
    return resolve_precision(device, config.precision, config.channels_last)


def run_tta(config: EvalConfig, payload: dict) -> str:
    """The test-time augmentation to evaluate with: the one typed, else the one the run reported with."""
    return config.tta if config.tta is not None else payload["config"].get("tta", "none")


def run_tta_fraction(config: EvalConfig, payload: dict) -> float:
    """The share of images selective TTA looks at again: the one typed, else the run's."""
    return config.tta_fraction if config.tta_fraction is not None else payload["config"].get("tta_fraction", 0.25)


def evaluate_checkpoint(config: EvalConfig, expected_model: str | None = None, data: Dataset | None = None,
                        payload: dict | None = None) -> dict:
    """The full report (report.build_report) of a checkpoint on a split, as a JSON-ready dict;
    with config.report_dir, also its pictures and per_class.csv there. payload: the checkpoint,
    when the caller has already loaded it."""
    path = Path(config.checkpoint)
    payload = payload if payload is not None else load_checkpoint(path)
    check_model_name(payload, expected_model)
    device = resolve_device(config.device)
    precision, channels_last = run_precision(device, config, payload)
    if data is None:
        data = load_dataset(DataSpec.of(payload["config"], config.data_dir, config.download))
    check_matches(data, payload, f"the checkpoint's {payload['model_name']}")
    split_name = config.split or ("test" if data.test is not None else "val")
    split = choose_split(payload["config"], data, split_name)
    model = load_model(payload, path, config.weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(tuple(payload["mean"]), tuple(payload["std"]), device)
    loader = BatchLoader(split, min(config.batch_size, len(split)), device, normalizer, channels_last, train=False)
    tta = run_tta(config, payload)
    result = evaluate(model, loader, device, precision, payload["num_classes"], tta=tta,
                      keep_predictions=True, tta_fraction=run_tta_fraction(config, payload))
    classes = list(payload.get("classes") or data.classes)
    source = ReportSource(str(path), payload["model_name"], payload["epoch"], config.weights, tta,
                          split_name, str(device), precision)
    report = assemble_report(source, result.predictions, classes, result.seconds)
    if config.report_dir is not None:
        write_report_dir(Path(config.report_dir), report, result.predictions, split.images, classes)
    return report


@dataclass(frozen=True)
class ReportSource:
    """What produced a report's logits: which weights, on which split, with which TTA, how."""
    checkpoint: str
    model: str
    epoch: int
    weights: str
    tta: str
    split: str
    device: str
    precision: str


def assemble_report(source: ReportSource, predictions: Predictions, classes: list[str], seconds: float) -> dict:
    """The JSON-ready report (--mode eval --output) of predictions on a split."""
    return {
        "checkpoint": source.checkpoint,
        "model": source.model,
        "epoch": source.epoch,
        "weights": source.weights,
        "tta": source.tta,
        "split": source.split,
        **build_report(predictions, classes),
        "device": source.device,
        "precision": source.precision,
        "seconds": seconds,
        "img_per_s": len(predictions.labels) / max(1e-9, seconds),
    }


def write_report_dir(folder: Path, report: dict, predictions: Predictions, images: torch.Tensor,
                     classes: list[str]) -> None:
    """report.json, per_class.csv, confusion.png, calibration.png and mistakes.png in folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --report-dir {folder}: {e.strerror or e}") from None
    write_json(folder / "report.json", report)
    write_per_class_csv(folder / "per_class.csv", report)
    plot_confusion(report, folder / "confusion.png")
    plot_calibration(report, folder / "calibration.png")
    plot_mistakes(images.cpu(), predictions.probabilities, predictions.labels, classes, folder / "mistakes.png")
