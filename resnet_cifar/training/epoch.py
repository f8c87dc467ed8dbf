"""One epoch of steps: from a step (a resumed epoch's) to its end, a stop request or the step
budget, with the running figures checked and shown every few steps."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from resnet_cifar.data.loader import BatchLoader
from resnet_cifar.errors import UserError
from resnet_cifar.training.assembly import RunParts, StepContext
from resnet_cifar.training.checkpoint_state import EpochTotals, TrainState
from resnet_cifar.training.step import train_step
from resnet_cifar.utils.progress import run_eta

LOG_EVERY_STEPS = 20  # how often the bar, the NaN check and (fp16) overflow count sync with the device
SYNC_AT_LEAST_EVERY_S = 5.0  # and at least this often, in seconds of wall time


class NonFiniteLoss(UserError):
    pass


@dataclass
class EpochOutcome:
    totals: EpochTotals
    steps_done: int  # steps of this epoch completed, counting those before a resume
    stop: str | None = None  # None: epoch complete; "signal" or "max_steps"


class EpochMeter:
    """The epoch's loss and correct counts, summed on the device; synced with the host every
    LOG_EVERY_STEPS steps (and at least every SYNC_AT_LEAST_EVERY_S), where the losses since the
    last sync are checked for NaN/Inf and the progress line is updated."""

    def __init__(self, ctx: StepContext, loader: BatchLoader, epoch: int, start_step: int, totals: EpochTotals,
                 bar, run_steps_left: int | None):
        self.ctx, self.loader, self.epoch, self.start_step = ctx, loader, epoch, start_step
        self.totals, self.bar, self.run_steps_left = totals, bar, run_steps_left
        self.loss_sum = torch.zeros((), device=ctx.device)
        # Mixed targets give fractional "correct" counts (see train_step).
        self.correct = torch.zeros((), dtype=torch.float32 if loader.mixes else torch.long, device=ctx.device)
        # The loss of every step since the last sync, checked at the sync: one copy a step rather
        # than a chain of small kernels (a small batch's GPU step is launch-bound).
        self.recent_losses = torch.zeros(LOG_EVERY_STEPS, device=ctx.device)
        self.synced_step = start_step  # the step whose loss is recent_losses[0]
        self.started = self.last_sync = time.perf_counter()

    def add(self, step: int, batch_loss: torch.Tensor, batch_correct: torch.Tensor) -> None:
        """The figures of step (0-based within the epoch)."""
        self.recent_losses[step - self.synced_step] = batch_loss
        self.loss_sum += batch_loss
        self.correct += batch_correct

    def due(self, steps_done: int) -> bool:
        # A slow step (a large model on a CPU) syncs at once, so the first figures and the run's
        # ETA show after the first step rather than after LOG_EVERY_STEPS of them.
        return steps_done % LOG_EVERY_STEPS == 0 or time.perf_counter() - self.last_sync > SYNC_AT_LEAST_EVERY_S

    def sync(self, steps_done: int, final: bool) -> None:
        self.last_sync = time.perf_counter()
        bad = (~torch.isfinite(self.recent_losses[: steps_done - self.synced_step])).nonzero()
        if len(bad):
            raise NonFiniteLoss(
                f"loss became NaN/Inf at epoch {self.epoch + 1}, step {self.synced_step + int(bad[0]) + 1}; training "
                f"stopped and the last good checkpoint was kept (try a lower --lr or --clip-grad-norm)"
            )
        self.synced_step = steps_done
        totals, seen_now = self.totals, (steps_done - self.start_step) * self.loader.batch_size
        seen = totals.seen + seen_now
        elapsed = max(1e-9, self.last_sync - self.started)
        eta = ("" if self.run_steps_left is None
               else f" run ETA {run_eta(steps_done - self.start_step, self.run_steps_left, elapsed)}")
        self.bar.set_postfix_str(
            f"loss {(totals.loss_sum + float(self.loss_sum)) / max(1, seen):.3f} "
            f"acc {100 * (totals.correct + self.correct.item()) / max(1, seen):.1f}% "
            f"lr {self.ctx.optimizer.param_groups[0]['lr']:.4g} "
            f"{seen_now / elapsed:.0f} img/s{eta}",
            refresh=final,
        )

    def totals_at(self, steps_done: int, skipped: int) -> EpochTotals:
        """The epoch's totals so far, over every process's share of the batches."""
        self.ctx.dist.sum_(self.loss_sum, self.correct)
        return EpochTotals(
            loss_sum=self.totals.loss_sum + float(self.loss_sum),
            correct=self.totals.correct + self.correct.item(),
            seen=self.totals.seen + (steps_done - self.start_step) * self.loader.batch_size,
            seconds=self.totals.seconds + time.perf_counter() - self.started,
            skipped_steps=self.totals.skipped_steps + skipped,
        )


def train_one_epoch(
    ctx: StepContext,
    loader: BatchLoader,
    epoch: int,
    start_step: int,
    totals: EpochTotals,
    step_budget: int | None,
    should_stop: Callable[[], bool],
    progress: Callable[..., Iterable],
    epoch_steps: int | None = None,
    run_steps_left: int | None = None,
) -> EpochOutcome:
    """Train from start_step to the end of the epoch (its first epoch_steps steps when given: a
    run of --iterations ends inside an epoch), a stop request or the step budget.

    run_steps_left: the steps the whole run has still to take from start_step on, for the
    progress line's estimate of the time to the end of the run (None: no estimate)."""
    ctx.model.train()
    epoch_steps = len(loader) if epoch_steps is None else epoch_steps
    bar = progress(total=epoch_steps, initial=start_step, desc=f"epoch {epoch + 1}")
    meter = EpochMeter(ctx, loader, epoch, start_step, totals, bar, run_steps_left)
    step, stop, skipped = start_step, None, 0
    for inputs, targets in loader.epoch(epoch, start_step):
        if step >= epoch_steps:
            break
        if should_stop():
            stop = "signal"
            break
        if step_budget is not None and step_budget <= 0:
            stop = "max_steps"
            break
        scale_before = ctx.scaler.get_scale() if ctx.scaler.is_enabled() else None
        batch_loss, batch_correct = train_step(ctx, inputs, targets, ctx.schedule.group_lrs(epoch, step),
                                               ctx.schedule.progress(epoch, step))
        if scale_before is not None and ctx.scaler.get_scale() < scale_before:
            skipped += 1  # fp16 overflow: GradScaler skipped this update
        meter.add(step, batch_loss, batch_correct)
        step += 1
        if step_budget is not None:
            step_budget -= 1
        bar.update(1)
        if meter.due(step):
            meter.sync(step, final=False)
    if stop is None and step_budget is not None and step_budget <= 0 and step < epoch_steps:
        stop = "max_steps"
    meter.sync(step, final=True)
    bar.close()
    return EpochOutcome(meter.totals_at(step, skipped), step, stop)


def train_epoch_explaining_compile(parts: RunParts, state: TrainState, step_budget: int | None,
                                   should_stop: Callable[[], bool], progress) -> EpochOutcome:
    """train_one_epoch, with a torch.compile failure (raised at the first call, e.g. when no C++
    compiler is found) turned into one line that says what to do."""
    try:
        return train_one_epoch(parts.ctx, parts.train_loader, state.epoch, state.step, state.totals,
                               step_budget, should_stop, progress, epoch_steps(parts, state.epoch),
                               run_steps_left(parts, state))
    except UserError:
        raise
    except Exception as e:
        if not parts.config.compile:
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--compile failed on this machine ({reason}); run without --compile") from None


def run_steps_left(parts: RunParts, state: TrainState) -> int:
    """The optimizer steps this invocation will still take: to the run's end or to --max-steps."""
    total = parts.config.iterations or parts.config.epochs * len(parts.train_loader)
    if parts.config.max_steps is not None:
        total = min(total, parts.config.max_steps)
    return max(0, total - state.global_step)


def epoch_steps(parts: RunParts, epoch: int) -> int:
    """Steps in this epoch: all of the loader's, but for the last one of an --iterations run."""
    per_epoch = len(parts.train_loader)
    if parts.config.iterations is None:
        return per_epoch
    return max(0, min(per_epoch, parts.config.iterations - epoch * per_epoch))
