"""Evaluation: a model over a split (used each epoch), and a saved checkpoint on the test set."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from augmentations import tta_logits
from checkpoints import load_checkpoint
from config import EvalConfig
from datasets import BatchLoader, Normalizer, load_cifar10
from devices import autocast, resolve_device, resolve_precision
from errors import UserError
from models import modeltype


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    n: int
    per_class_correct: list[int]
    per_class_total: list[int]
    seconds: float

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
) -> EvalResult:
    """Loss, accuracy and per-class counts over every image of the loader's split, from the
    logits of the views `tta` names (augmentations.tta_logits)."""
    model.eval()
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    class_correct = torch.zeros(num_classes, dtype=torch.long, device=device)
    class_total = torch.zeros(num_classes, dtype=torch.long, device=device)
    for inputs, targets in loader.epoch():
        if should_stop():
            raise EvalInterrupted()
        with autocast(device, precision):
            logits = tta_logits(model, inputs, tta)
        loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
        hits = (logits.argmax(1) == targets).long()
        class_correct.index_add_(0, targets, hits)
        class_total.index_add_(0, targets, torch.ones_like(hits))
    n = int(class_total.sum())
    return EvalResult(
        loss=float(loss_sum) / max(1, n),
        accuracy=int(class_correct.sum()) / max(1, n),
        n=n,
        per_class_correct=class_correct.tolist(),
        per_class_total=class_total.tolist(),
        seconds=time.perf_counter() - started,
    )


def load_model(payload: dict, source: Path, weights_kind: str = "raw") -> torch.nn.Module:
    """Rebuild the checkpoint's model and load its weights ("raw", or "ema": the moving
    average), naming any mismatch."""
    name, num_classes = payload["model_name"], payload["num_classes"]
    model = modeltype(name, num_classes)
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


def evaluate_checkpoint(config: EvalConfig, expected_model: str | None = None) -> dict:
    """Test-set loss, accuracy and per-class accuracy of a checkpoint, as a JSON-ready dict."""
    path = Path(config.checkpoint)
    payload = load_checkpoint(path)
    if expected_model is not None and expected_model != payload["model_name"]:
        raise UserError(
            f"--model {expected_model} does not match the checkpoint's model {payload['model_name']}"
        )
    device = resolve_device(config.device)
    precision, channels_last = resolve_precision(device, config.precision, config.channels_last)
    data_dir = config.data_dir or payload["config"].get("data_dir", "./data")
    data = load_cifar10(Path(data_dir), download=config.download)
    if len(data.classes) != payload["num_classes"]:
        raise UserError(
            f"the data set in {data_dir} has {len(data.classes)} classes but the checkpoint's "
            f"{payload['model_name']} has {payload['num_classes']}"
        )
    model = load_model(payload, path, config.weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(tuple(payload["mean"]), tuple(payload["std"]), device)
    loader = BatchLoader(data.test, min(config.batch_size, len(data.test)), device, normalizer,
                         channels_last, train=False)
    result = evaluate(model, loader, device, precision, payload["num_classes"], tta=config.tta)
    classes = payload.get("classes") or list(data.classes)
    return {
        "checkpoint": str(path),
        "model": payload["model_name"],
        "epoch": payload["epoch"],
        "weights": config.weights,
        "tta": config.tta,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "n": result.n,
        "per_class_accuracy": result.per_class_accuracy(classes),
        "device": str(device),
        "precision": precision,
        "seconds": result.seconds,
        "img_per_s": result.n / max(1e-9, result.seconds),
    }
