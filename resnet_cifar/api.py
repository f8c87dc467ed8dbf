"""The Python API: the command line's work, callable from a notebook or another project.

    import resnet_cifar
    model = resnet_cifar.build_model("resnet20")
    summary = resnet_cifar.train(model="resnet20", recipe="fast", epochs=1, data_dir="data")
    report = resnet_cifar.evaluate(summary["checkpoint"])
    loaded = resnet_cifar.load_checkpoint(summary["checkpoint"])

Options are the command line's, by their config.json names (`batch_size`, `lr`, ...), checked as
if they were typed; a bad one raises UserError with the message the command line prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet_cifar.config import WEIGHTS, EvalConfig
from resnet_cifar.data.datasets import trained_image_size
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import MODEL_NAMES, modeltype
from resnet_cifar.models.techniques import BN_SCALES
from resnet_cifar.option_values import checked_value, mode_config, train_config_of
from resnet_cifar.options import BY_DEST, MODE_READS
from resnet_cifar.results.evaluation import evaluate_checkpoint
from resnet_cifar.results.evaluation import load_model as _load_model
from resnet_cifar.runfiles.checkpoints import load_checkpoint as _load_payload
from resnet_cifar.runfiles.destinations import check_eval
from resnet_cifar.training.run import resolve_run, run_training
from resnet_cifar.utils.process_state import kept_process_state

__all__ = ["list_models", "build_model", "Checkpoint", "load_checkpoint", "train", "evaluate"]


def list_models() -> tuple[str, ...]:
    """Every model name `build_model` (and --model) takes."""
    return MODEL_NAMES


def build_model(name: str, num_classes: int = 10, dropout: float = 0.0, *, whitening: bool | None = None,
                dirac: bool | None = None, bn_scale: str | None = None) -> nn.Module:
    """A freshly initialised model by name, for images of 32x32 pixels or more; whitening, dirac
    and bn_scale as --whitening, --dirac and --bn-scale (None: the model's own). A whitening layer
    needs its filters from training images before training:
    `resnet_cifar.models.techniques.init_whitening(model, normalised_images)`."""
    _check_choice("name", name, MODEL_NAMES)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= 100_000:
        raise UserError(f"build_model: num_classes must be an integer from 2 to 100000, got {num_classes!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"build_model: dropout must be a number in [0, 1), got {dropout!r}")
    for flag, value in (("whitening", whitening), ("dirac", dirac)):
        if value is not None and not isinstance(value, bool):
            raise UserError(f"build_model: {flag} must be True, False or None, got {value!r}")
    if bn_scale is not None:
        _check_choice("bn_scale", bn_scale, BN_SCALES)
    return modeltype(name, num_classes, dropout, whitening=whitening, dirac=dirac, bn_scale=bn_scale)


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise UserError(f"{what} {value!r} is none of: {', '.join(choices)}")


@dataclass(frozen=True)
class Checkpoint:
    """A trained model with what it needs to classify: its classes and the normalisation it trained with."""

    model: nn.Module  # in eval mode, on the CPU
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, for images scaled to 0-1
    std: tuple[float, ...]
    image_size: int
    epoch: int  # epochs trained
    config: dict[str, Any]  # the run's resolved options

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, 3, H, W) as the model's input."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std


def load_checkpoint(path: str | Path, weights: str = "raw") -> Checkpoint:
    """A checkpoint's model ("raw" weights, or "ema": their moving average), verified and ready to use."""
    _check_choice("weights", weights, WEIGHTS)
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise UserError(f"load_checkpoint: path must name a checkpoint file, got {path!r}")
    path = Path(path)
    payload = _load_payload(path)
    model = _load_model(payload, path, weights).eval()
    classes = tuple(payload.get("classes") or (str(i) for i in range(payload["num_classes"])))
    return Checkpoint(model, classes, tuple(payload["mean"]), tuple(payload["std"]), trained_image_size(payload),
                      payload["epoch"], dict(payload["config"]))


def train(**options: Any) -> dict[str, Any]:
    """Train a new run as `python main.py --mode train` would with these options; returns its summary
    (run_dir, checkpoint, final accuracy, split, tta). The recipe fills in what is not given."""
    if "resume" in options or "seeds" in options:
        raise UserError("train() starts one new run; resume or train several seeds from the command line")
    config, explicit = train_config_of(options, "train()")
    run = resolve_run(config, explicit, environ={})
    for line in run.notes:  # the route a budget picked, said as the command line says it
        print(line)
    with kept_process_state():  # the caller's process goes on: its threads, flags and generators as they were
        code, summary = run_training(run)
    if code != 0:
        raise KeyboardInterrupt(f"training stopped by a signal after saving {summary.get('checkpoint', 'its state')}")
    return summary


def evaluate(checkpoint: str | Path, **options: Any) -> dict[str, Any]:
    """A checkpoint's report (accuracy, loss, per-class accuracy, confusion, calibration) as
    `python main.py --mode eval` computes it; options: split, tta, weights, data_dir, device, report_dir..."""
    values = {"checkpoint": checkpoint if isinstance(checkpoint, str) else str(checkpoint), **options}
    checked = {}
    for name, value in values.items():
        option = BY_DEST.get(name)
        if option is None or "eval" not in option.modes:
            raise UserError(f"evaluate(): unknown option {name!r}; valid options: "
                            f"{', '.join(sorted(MODE_READS['eval'] - {'config', 'dry_run'}))}")
        if value is not None:
            checked[name] = checked_value(option, value, "evaluate()")
    config = mode_config(EvalConfig, "eval", checked)
    check_eval(config)
    payload = _load_payload(Path(config.checkpoint))
    check_eval(config, payload)
    with kept_process_state():
        return evaluate_checkpoint(config, expected_model=checked.get("model"), payload=payload)
