"""What a checkpoint holds beyond the weights, and how a run is rebuilt from it: the run's state
(epoch, step, running sums, best validation accuracy), optimizer, schedule, scaler, EMA and RNGs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from resnet_cifar.data.datasets import Dataset
from resnet_cifar.errors import UserError
from resnet_cifar.utils.rng import capture_rng_state, restore_rng_state

if TYPE_CHECKING:
    from resnet_cifar.training.assembly import RunParts, StepContext


@dataclass
class EpochTotals:
    """Running sums for the epoch in progress; saved in checkpoints so a resumed epoch reports
    the same figures as an uninterrupted one."""

    loss_sum: float = 0.0
    correct: float = 0  # an int, except with mixed targets (see train_step)
    seen: int = 0
    seconds: float = 0.0
    skipped_steps: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def data_summary(data: Dataset) -> dict:
    return {"n_train": len(data.train), "n_test": len(data.test) if data.test is not None else 0,
            "classes": list(data.classes)}


@dataclass
class TrainState:
    """Where a run stands: everything beyond the model, optimizer and RNG that a resume needs."""

    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimizer steps of that epoch already taken
    global_step: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    best_val_acc: float | None = None


def build_payload(parts: RunParts, state: TrainState, data: Dataset) -> dict:
    return {
        "model_name": parts.config.model,
        "num_classes": parts.config.num_classes,
        # What --mode eval, predict and export need to feed the model as training did.
        "dataset": data.kind,
        "classes": list(data.classes),
        "mean": list(data.mean),
        "std": list(data.std),
        "image_size": data.image_size,
        "config": parts.config.to_dict(),
        "data": data_summary(data),
        "model_state": parts.model.state_dict(),
        "ema_state": parts.ctx.ema.state_dict() if parts.ctx.ema is not None else None,
        "ema_updates": parts.ctx.ema.updates if parts.ctx.ema is not None else None,
        "lookahead_state": parts.ctx.lookahead.state_dict() if parts.ctx.lookahead is not None else None,
        "optimizer_state": parts.ctx.optimizer.state_dict(),
        "schedule_state": parts.ctx.schedule.state_dict(),
        "scaler_state": parts.ctx.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "global_step": state.global_step,
        "totals": state.totals.as_dict(),
        "best_val_acc": state.best_val_acc,
        "finished": state.epoch >= parts.config.epochs,
        "rng": capture_rng_state(),
        "loader_seed": parts.train_loader.seed,
        # The data order depends on the global batch only; BatchNorm statistics on each process's
        # share of it, so a resume with another number of processes is exact in data, not in BN.
        "world_size": parts.dist.world_size,
        "elastic_run_id": parts.dist.run_id,
        "num_threads": torch.get_num_threads(),
        # What `auto` chose here: a resume on another machine of the same device kind goes on in it
        # (commands.keep_trained_precision).
        "resolved": {"device_type": parts.device.type, "precision": parts.precision,
                     "channels_last": parts.channels_last},
        "torch_version": str(torch.__version__),
    }


def restore_payload(payload: dict, ctx: StepContext) -> TrainState:
    """Everything but the weights, which build_run loads before wrapping the model."""
    if ctx.ema is not None:
        if payload.get("ema_state") is None:
            raise UserError("--ema: the checkpoint holds no moving average to continue; start a new run")
        ctx.ema.load_state_dict(payload["ema_state"])
        # A checkpoint written before the count was kept: the EMA was updated once a step.
        updates = payload.get("ema_updates")
        ctx.ema.updates = payload["global_step"] if updates is None else updates
    if ctx.lookahead is not None:
        if payload.get("lookahead_state") is None:
            raise UserError("--lookahead: the checkpoint holds no lookahead average to continue; start a new run")
        ctx.lookahead.load_state_dict(payload["lookahead_state"])
    ctx.optimizer.load_state_dict(payload["optimizer_state"])
    ctx.schedule.load_state_dict(payload["schedule_state"])
    if payload["scaler_state"]:
        ctx.scaler.load_state_dict(payload["scaler_state"])
    restore_rng_state(payload["rng"])
    return TrainState(
        epoch=payload["epoch"], step=payload["step"], global_step=payload["global_step"],
        totals=EpochTotals(**payload["totals"]), best_val_acc=payload["best_val_acc"],
    )
