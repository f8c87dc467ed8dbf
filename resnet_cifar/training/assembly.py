"""Building a run: device and precision, seeded splits and loaders (each process's share under
torchrun), the model (loaded, laid out, then wrapped in DDP, then compiled) and its optimizer."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from resnet_cifar.config import SCHEDULERS, TrainConfig
from resnet_cifar.data.augmentations import Augmentation
from resnet_cifar.data.datasets import Dataset, Split, split_validation
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import modeltype
from resnet_cifar.models.techniques import (
    fixed_whitening_layers,
    init_whitening,
    model_options,
    set_bn_momentum,
    whitening_images,
)
from resnet_cifar.optim.ema import ModelEMA
from resnet_cifar.optim.lookahead import Lookahead
from resnet_cifar.optim.schedules import LRSchedule, build_optimizer
from resnet_cifar.training import precision_choice
from resnet_cifar.utils.devices import configure_determinism, resolve_device, resolve_precision
from resnet_cifar.utils.distributed import Distributed, shard_bounds, wrap_model
from resnet_cifar.utils.rng import seed_everything


@dataclass
class StepContext:
    """What one optimizer step needs besides the batch."""

    model: nn.Module  # what the step calls: possibly DDP-wrapped and compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    criterion: nn.Module
    device: torch.device
    precision: str
    clip_grad_norm: float | None
    ema: ModelEMA | None = None
    lookahead: Lookahead | None = None
    eval_model: nn.Module | None = None  # what evaluation calls: never DDP (no collectives per batch)
    dist: Distributed = field(default_factory=Distributed)
    global_batch: int = 0  # images a step over all processes (0: this process's batch is the whole batch)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside torch.compile and DDP wrappers (its parameters are the same tensors)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def make_step_context(model: nn.Module, config: TrainConfig, device: torch.device, precision: str,
                      steps_per_epoch: int, dist: Distributed | None = None) -> StepContext:
    """Optimizer, schedule, GradScaler and loss for `model` as the config asks (the one place
    the trainer and the benchmarks build them). Under torchrun the step calls DDP(model),
    compiled after wrapping as DDP's documentation asks; evaluation calls the bare model."""
    dist = dist if dist is not None else Distributed()
    compile_ = torch.compile if config.compile else (lambda module: module)
    trained = compile_(wrap_model(model, dist))
    optimizer, rules = build_optimizer(model, config)
    return StepContext(
        model=trained,
        optimizer=optimizer,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        schedule=LRSchedule(config, steps_per_epoch, rules),
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        device=device,
        precision=precision,
        clip_grad_norm=config.clip_grad_norm,
        ema=ModelEMA(model, config.ema) if config.ema is not None else None,
        lookahead=Lookahead(model, config.iterations or config.epochs * steps_per_epoch) if config.lookahead else None,
        eval_model=compile_(model) if dist.active else trained,
        dist=dist,
        global_batch=config.batch_size,
    )


@dataclass
class RunParts:
    """Everything a training run is made of, built the same way for main.py and bench/."""

    config: TrainConfig  # with threads resolved
    device: torch.device
    precision: str
    channels_last: bool
    model: nn.Module  # unwrapped: what checkpoints save
    ctx: StepContext
    train_loader: BatchLoader
    eval_loaders: dict[str, BatchLoader]  # this process's share of each evaluation split
    dist: Distributed = field(default_factory=Distributed)
    precision_choice: precision_choice.Choice | None = None  # what `auto` measured, when it did

    @property
    def report_split(self) -> str:
        """The split a run's final figures and report are on: test, or val where the data has no test set."""
        return "test" if "test" in self.eval_loaders else "val"


def augmentation_of(config: TrainConfig, image_size: int = 32) -> Augmentation:
    """The config's training augmentation for images of image_size: the crop's padding scales with
    the size (4 pixels at 32, as in the CIFAR recipes)."""
    padding = config.translate if config.translate is not None else max(1, round(4 * image_size / 32))
    return Augmentation(crop_padding=padding, pad_mode=config.translate_pad, flip=config.flip, cutout=config.cutout,
                        cutout_inside=config.cutout_inside,
                        policy=config.augment, mixup=config.mixup, cutmix=config.cutmix,
                        brightness=config.brightness, contrast=config.contrast)


def shard(split: Split, dist: Distributed) -> Split:
    return split.subset(slice(*shard_bounds(len(split), dist.rank, dist.world_size)))


def check_schedule(config: TrainConfig) -> None:
    """Refuse a schedule that needs an evaluation the run would skip."""
    if config.eval_every != 1 and config.scheduler == "plateau" and config.val_size:
        raise UserError(f"--eval-every {config.eval_every}: --scheduler plateau with --val-size watches the "
                        f"validation loss after every epoch; use --eval-every 1 or another --scheduler "
                        f"({', '.join(k for k in SCHEDULERS if k != 'plateau')})")


CPU_EVALUATION_BATCH = 256


def evaluation_batch(train_batch: int, device: torch.device) -> int:
    """The batch the run evaluates with: on a GPU its training batch, at least 256 (a GPU gains from
    the largest); on a CPU 256, never slower there than larger ones (airbench94 with 6-view TTA in
    bf16, in a fresh process: 1.36x the images a second of 1,024; after training steps, 1.07x; and
    a budget's warm-up times a quarter of the images: bench/README.md, "The evaluation batch on a
    CPU")."""
    return CPU_EVALUATION_BATCH if device.type == "cpu" else max(train_batch, 256)


def build_run(config: TrainConfig, data: Dataset, dist: Distributed | None = None,
              model_state: dict | None = None) -> RunParts:
    """Resolve device and precision, seed, split, and build loaders, model and optimizer.

    model_state (a resumed run's weights) is loaded before the model is wrapped in DDP, so
    that DDP's first broadcast and the compiled graph see the resumed weights.
    """
    dist = dist if dist is not None else Distributed()
    device = dist.device if dist.device is not None else resolve_device(config.device)
    if data.test is None and config.val_size == 0:
        raise UserError(f"{data.source} has no test/ folder: pass --val-size N to hold out N training images "
                        f"to evaluate on")
    config = replace(config, num_classes=len(data.classes))
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    config = replace(config, threads=torch.get_num_threads())
    choice = None
    if config.precision == "auto" and config.channels_last is None:
        # Rank 0 measures (or reads its cache) alone; every process trains in its choice.
        choice = dist.broadcast_object(precision_choice.choose(device, config.model, config.batch_size,
                                                               config.num_classes, data.image_size)
                                       if dist.is_main else None)
        precision, channels_last = choice.precision, choice.channels_last
    else:
        precision, channels_last = resolve_precision(device, config.precision, config.channels_last)
    configure_determinism(device, config.deterministic)
    check_schedule(config)
    # Every rank seeds alike: the same initial weights, validation split and epoch plans.
    seed_everything(config.seed)
    train_split, val_split = split_validation(data.train, config.val_size, config.seed)
    normalizer = Normalizer(data.mean, data.std, device)
    train_loader = BatchLoader(train_split, config.batch_size, device, normalizer, channels_last,
                               train=True, seed=config.seed, augmentation=augmentation_of(config, data.image_size),
                               num_classes=config.num_classes, rank=dist.rank, world_size=dist.world_size)
    if config.iterations is not None:
        config = replace(config, epochs=math.ceil(config.iterations / len(train_loader)))
    eval_batch = evaluation_batch(config.batch_size, device)
    eval_loaders = {}
    for name, split in (("val", val_split), ("test", data.test)):
        if split is not None:
            mine = shard(split, dist)
            eval_loaders[name] = BatchLoader(mine, max(1, min(eval_batch, len(mine))), device, normalizer,
                                             channels_last, train=False)
    model = modeltype(config.model, config.num_classes, config.dropout, **model_options(config.to_dict())).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.bn_momentum is not None:
        set_bn_momentum(model, config.bn_momentum)
    if model_state is not None:
        try:
            model.load_state_dict(model_state)
        except RuntimeError as e:  # missing, unexpected or misshapen weights: a damaged or foreign checkpoint
            raise UserError(f"the checkpoint's weights do not fit {config.model}: "
                            f"{' '.join(str(e).split())[:300]}") from None
    elif fixed_whitening_layers(model):
        # A new run's whitening layer, from its training images (a resumed one loads it).
        images = whitening_images(train_split.images, config.whitening_images)
        init_whitening(model, normalizer(images.to(device), channels_last=False))
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ctx = make_step_context(model, config, device, precision, len(train_loader), dist)
    return RunParts(config, device, precision, channels_last, model, ctx, train_loader, eval_loaders, dist, choice)


def describe_shares(batch_size: int, world_size: int) -> str:
    """'2 x 250', or '2 x 167 + 1 x 166' where the batch does not divide evenly."""
    small, extra = divmod(batch_size, world_size)
    if not extra:
        return f"{world_size} x {small}"
    return f"{extra} x {small + 1} + {world_size - extra} x {small}"


def describe_run(parts: RunParts, n_test: int, run_dir: Path) -> str:
    n_params = sum(p.numel() for p in parts.model.parameters())
    n_val = parts.config.val_size
    layout = " channels_last" if parts.channels_last else ""
    processes = ""
    if parts.dist.active:
        backend = "nccl" if parts.device.type == "cuda" else "gloo"
        processes = (f", {parts.dist.world_size} processes ({backend}, global batch {parts.config.batch_size}: "
                     f"{describe_shares(parts.config.batch_size, parts.dist.world_size)})")
    every = parts.config.eval_every
    evaluated = ("" if every == 1 else ", evaluated after the last epoch only" if every == 0
                 else f", evaluated every {every} epochs and after the last")
    return (f"training {parts.config.model} ({n_params:,} parameters) on {parts.device}, {parts.precision}{layout}"
            f"{processes}, {len(parts.train_loader.split)} train / {n_val} val / {n_test} test images{evaluated}, "
            f"run dir {run_dir}")
