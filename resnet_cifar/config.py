"""The training configuration: one frozen dataclass, built by main.py, stored in every checkpoint."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

SCHEDULERS = ("plateau", "step", "multistep", "cosine", "onecycle", "triangular")
# Schedules whose whole curve is laid out over the run's length: a resume may not change the length.
LENGTH_SHAPED_SCHEDULERS = ("cosine", "onecycle", "triangular")
MILESTONE_UNITS = ("epochs", "steps")
WARMUP_STYLES = ("linear", "constant")
WEIGHTS = ("raw", "ema")
FLIPS = ("random", "alternating")
SPLITS = ("test", "val")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "muon")
ROUTES = ("auto",)  # --route
FORMATS = ("onnx", "torchscript", "pt2", "safetensors")  # --mode export

@dataclass(frozen=True)
class TrainConfig:
    """A training run's options. Defaults are the seed recipe; recipes/ override them, typed options
    override both. What each field means, the values it takes and what a resume may do with it are
    declared once, with its option, in options/ (docs/options.md)."""

    model: str = "resnet18"
    recipe: str = "seed"
    dataset: str = "cifar10"
    labels: str = "fine"
    image_size: int | None = None
    num_classes: int = 10  # not an option: the data's, set when the data set is read
    data_dir: str = "./data"
    download: bool = True
    run_dir: str | None = None
    epochs: int = 200
    iterations: int | None = None
    time_budget: str | None = None
    route: str | None = None
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.0
    whitening: bool | None = None
    dirac: bool | None = None
    bn_scale: str | None = None
    activation: str | None = None
    bn_momentum: float | None = None
    optimizer: str = "sgd"
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    muon_weight_decay: float = 0.0
    muon_coefficients: str = "muon"
    muon_renorm_every: int = 1
    muon_renorm_growth: float = 0.0
    scheduler: str = "plateau"
    milestones: tuple[int, ...] = (100, 150)
    milestone_unit: str = "epochs"
    step_size: int = 30
    gamma: float = 0.1
    plateau_patience: int = 5
    warmup_epochs: float = 0.0
    warmup_steps: int = 0
    warmup_style: str = "linear"
    triangular_start: float = 0.2
    triangular_peak: float = 0.2
    triangular_end: float = 0.0
    bn_bias_lr_scale: float = 1.0
    lookahead: bool = False
    whiten_bias_epochs: float | None = None
    whitening_images: int = 5000
    translate_pad: str = "zeros"
    translate: int | None = None
    flip: str = "random"
    cutout: int = 0
    cutout_inside: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    augment: str = "none"
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float | None = None
    tta: str = "none"
    tta_fraction: float = 0.25
    eval_every: int = 1
    val_size: int = 0
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    max_steps: int | None = None
    clip_grad_norm: float | None = None
    deterministic: bool = False
    tensorboard: bool = False
    sync_bn: bool = False
    dist_timeout: float = 600.0
    threads: int | None = None
    quiet: bool = False
    # Where a run continued in another folder came from (not an option): the checkpoint, its run,
    # epoch and step (destinations.resume_target); None for a run in its own folder.
    resumed_from: dict | None = None

    def evaluates_after(self, epoch: int) -> bool:
        """Whether the val/test evaluation runs after 0-based `epoch` (every eval_every-th, and the last)."""
        last = epoch + 1 >= self.epochs
        return last if self.eval_every == 0 else last or (epoch + 1) % self.eval_every == 0

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of a dict (config.json's, a checkpoint's); ValueError naming the first value
        whose type is not its field's (a damaged or foreign file)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in fields}
        for name, value in values.items():
            if not _fits(value, fields[name].type):
                raise ValueError(f"{name} is {value!r}, not {fields[name].type}")
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values)


def _fits(value: Any, annotation: str) -> bool:
    """Whether value is of the annotated type (the forms TrainConfig's fields use)."""
    options = [part.strip() for part in annotation.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value)
        if option == "str" and isinstance(value, str):
            return True
        if option == "dict" and isinstance(value, dict):
            return True
        if option == "tuple[int, ...]" and isinstance(value, (list, tuple)):
            return all(_fits(item, "int") for item in value)
    return False


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    data_dir: str | None = None  # None: the data folder recorded in the checkpoint
    download: bool = True
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    batch_size: int = 500
    output: str | None = None
    quiet: bool = False
    weights: str = "raw"  # "ema": the checkpoint's moving average of the weights
    tta: str | None = None  # None: the run's own, so that eval reports what training reported
    tta_fraction: float | None = None  # None: the run's own
    split: str | None = None  # "test", or "val": the images the run held out; None: test where the data has one
    report_dir: str | None = None


@dataclass(frozen=True)
class PredictConfig:
    checkpoint: str
    inputs: tuple[str, ...]  # image files and folders
    top_k: int = 3
    output: str | None = None  # CSV
    device: str = "auto"
    weights: str = "raw"


@dataclass(frozen=True)
class ExportConfig:
    checkpoint: str
    format: str
    output: str
    data_dir: str | None = None  # test images for the check; None: the checkpoint's data folder
    weights: str = "raw"
