"""--time-budget: how many optimizer steps fit a wall-time budget, decided from a short measured
warm-up, so that "train for 30 minutes" can be typed.

The budget is the whole command's wall time: start-up, data, this measurement, training, every
evaluation the run will do and its final report. The run then lays its recipe's schedule over
exactly the steps that fit (config.iterations), which config.json and the checkpoint record: a
resume continues the same schedule, and `--iterations N` with the recorded N reproduces the run.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType

import torch

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.augmentations import tta_logits
from resnet_cifar.data.datasets import Dataset
from resnet_cifar.errors import UserError
from resnet_cifar.training.assembly import RunParts, build_run
from resnet_cifar.training.step import train_step
from resnet_cifar.utils.devices import autocast
from resnet_cifar.utils.distributed import Distributed
from resnet_cifar.utils.durations import duration_seconds
from resnet_cifar.utils.timings import seconds_per_call, warm_then_time

UNTIMED_STEPS = 2  # the first steps pay for allocation and autotuning
# Then steps are timed for 1% of the budget, 3 to 20 s (at least 3, at most 50 steps), and the median
# step is planned with: a window of a few slow steps let one slow moment shorten a whole plan
# (bench/README.md).
MEASURE_FRACTION = 0.01
MEASURE_SECONDS = (3.0, 20.0)
PER_EPOCH_S = 0.5  # checkpoint and curves after each epoch (bench/README.md, "The work after each epoch")
# The plan takes steps as this much slower than measured (the median step): CPU runs drift both ways
# from their first steps (bench/README.md, where the runs are listed).
STEP_SLACK = 1.03
FINAL_S = 3.0  # the final report's pictures
# seconds_per_call's settings for one call's seconds
ONE_CALL = MappingProxyType(dict(untimed=0, min_seconds=0.0, min_calls=1, max_calls=1))


def measure_seconds(budget_s: float) -> float:
    """How long the run's steps are timed before planning: MEASURE_FRACTION of the budget, clamped."""
    low, high = MEASURE_SECONDS
    return min(high, max(low, MEASURE_FRACTION * budget_s))


def evaluations_in(epochs: int, eval_every: int) -> int:
    """How many val/test evaluations a run of `epochs` does (every eval_every-th epoch and the last)."""
    if eval_every == 0:
        return 1
    return epochs // eval_every + (1 if epochs % eval_every else 0)


@dataclass(frozen=True)
class BudgetPlan:
    budget_s: float
    spent_s: float  # before training: start-up, data and the measurement
    step_s: float  # one optimizer step, measured
    evaluation_s: float  # one evaluation of every split and model the run evaluates, estimated
    repeat_s: float  # what the run pays again before its steps reach step_s (building it, compiling)
    steps_per_epoch: int
    steps: int
    epochs: int
    evaluations: int

    def describe(self, budget: str) -> str:
        return (f"time budget {budget}: {self.steps:,} steps fit ({self.steps / self.steps_per_epoch:.1f} epochs of "
                f"{self.steps_per_epoch}) at {self.step_s:.3g} s a step, with {self.evaluations} evaluation"
                f"{'s' if self.evaluations != 1 else ''} of ~{self.evaluation_s:.0f} s; {self.spent_s:.0f} s "
                f"already spent on start-up, data and this measurement{self.repeat_text()} (rerun with --iterations "
                f"{self.steps})")

    def repeat_text(self) -> str:
        return f", ~{self.repeat_s:.0f} s to build the run again" if self.repeat_s >= 1 else ""


def plan_steps(budget_s: float, spent_s: float, step_s: float, evaluation_s: float, steps_per_epoch: int,
               eval_every: int, repeat_s: float = 0.0) -> BudgetPlan:
    """The most steps whose training, per-epoch work, evaluations and final report end within the
    budget, given what was already spent and the measured costs (repeat_s: what the run will pay
    again before its steps run at step_s)."""
    available = budget_s - spent_s - repeat_s - FINAL_S - 0.01 * budget_s  # 1% for what the estimates miss

    planned_step_s = step_s * STEP_SLACK

    def cost(steps: int) -> float:
        epochs = math.ceil(steps / steps_per_epoch)
        return steps * planned_step_s + epochs * PER_EPOCH_S + evaluations_in(epochs, eval_every) * evaluation_s

    steps = max(0, math.floor(available / planned_step_s))
    while steps > 0 and cost(steps) > available:
        # Shrink by the overshoot (at least one step): few iterations even for long budgets...
        steps = max(0, steps - max(1, math.floor((cost(steps) - available) / planned_step_s)))
    while cost(steps + 1) <= available:
        steps += 1  # ...then grow back what an epoch's fixed costs made it give up

    epochs = math.ceil(steps / steps_per_epoch)
    return BudgetPlan(budget_s, spent_s, step_s, evaluation_s, repeat_s, steps_per_epoch, steps, epochs,
                      evaluations_in(epochs, eval_every))


def measure_and_plan(config: TrainConfig, data: Dataset, dist: Distributed, started: float,
                     clock: Callable[[], float] = time.perf_counter) -> BudgetPlan:
    """Time the run's own step (model, batch, precision, layout) and evaluation batches on a
    throwaway copy of the run, then plan the steps; under torchrun every process measures (the
    steps are collective) and rank 0's plan is everyone's.

    The run itself is built again after the plan, and its first step and first evaluation batch
    cost more than the others: what they cost on the copy is counted. With --compile a second copy
    is built and timed instead, as torch may reuse the first copy's graphs or compile again
    (torch 2.14 reuses them: a second ResNet-20's first compiled step took 1.9 s, the first 60 s)."""
    copy_config = replace(config, iterations=None, epochs=1, ema=None)
    build_started = clock()
    parts = build_run(copy_config, data, dist)
    build_s = clock() - build_started
    one_step, one_batch = timed_calls(parts, config)
    first_step_extra_s, step_s = warm_then_time(
        one_step, clock, UNTIMED_STEPS, min_seconds=measure_seconds(duration_seconds(config.time_budget)),
        agree=lambda go_on: dist.max_int(int(go_on)) > 0)
    # The median of three batches: one timed batch (the first after warming up) put a CPU run's
    # evaluation at 81 s for an evaluation that took 61 s.
    first_batch_extra_s, batch_s = warm_then_time(one_batch, clock, 1, min_seconds=1.0, min_calls=3, max_calls=5)
    evaluation_s = _evaluation_seconds(parts, config, batch_s)
    steps_per_epoch = len(parts.train_loader)
    if config.compile:
        del parts, one_step, one_batch
        again_step, again_batch = timed_calls(build_run(copy_config, data, dist), config)
        first_step_extra_s = max(0.0, seconds_per_call(again_step, clock, **ONE_CALL) - step_s)
        first_batch_extra_s = max(0.0, seconds_per_call(again_batch, clock, **ONE_CALL) - batch_s)
    repeat_s = build_s + first_step_extra_s + first_batch_extra_s
    plan = plan_steps(duration_seconds(config.time_budget), clock() - started, step_s, evaluation_s,
                      steps_per_epoch, config.eval_every, repeat_s)
    plan = dist.broadcast_object(plan if dist.is_main else None)
    if plan.steps < 1:
        raise UserError(f"--time-budget {config.time_budget}: no training step fits (start-up, data and the "
                        f"measurement took {plan.spent_s:.0f} s{plan.repeat_text()}, a step {plan.step_s:.3g} s, an "
                        f"evaluation ~{plan.evaluation_s:.0f} s); give a larger budget")
    return plan


def timed_calls(parts: RunParts, config: TrainConfig) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one training step, one evaluation batch with the run's TTA) of `parts`, each returning
    once the device is done."""
    # Epochs after epochs: a small data set may hold fewer steps than the measurement takes.
    batches = itertools.chain.from_iterable(parts.train_loader.epoch(epoch) for epoch in itertools.count())
    test_batches = itertools.chain.from_iterable(parts.eval_loaders[parts.report_split].epoch()
                                                 for _ in itertools.count())

    def one_step() -> None:
        inputs, targets = next(batches)
        loss, _ = train_step(parts.ctx, inputs, targets, config.lr * 1e-3)
        loss.item()  # waits for the device

    def one_batch() -> None:
        inputs, _ = next(test_batches)
        model = parts.ctx.eval_model
        model.eval()
        with torch.no_grad(), autocast(parts.device, parts.precision):
            tta_logits(model, inputs, config.tta, config.tta_fraction).float().sum().item()
        model.train()

    return one_step, one_batch


def _evaluation_seconds(parts: RunParts, config: TrainConfig, batch_s: float) -> float:
    """One evaluation of the run from one evaluation batch's seconds: every val/test image, with
    the run's TTA, for each model it evaluates (the weights and, with --ema, their average)."""
    loader = parts.eval_loaders[parts.report_split]
    images = sum(len(split_loader.split) for split_loader in parts.eval_loaders.values())  # this process's share
    return batch_s / loader.batch_size * images * (2 if config.ema is not None else 1)


# A replanned run may end this far past its budget, or this far before it, before it is laid again.
LATE_FRACTION = 0.005
EARLY_FRACTION = 0.02


@dataclass(frozen=True)
class BudgetWatch:
    """A --time-budget run's ceiling while it trains: at the end of each epoch the steps left are
    fitted again to the time left, at the speed the last epoch ran, so that a run that falls behind
    its plan (or runs ahead of it) still ends at its budget."""

    plan: BudgetPlan
    deadline: float  # on `clock`: the run's start plus its budget
    eval_every: int
    clock: Callable[[], float] = time.perf_counter

    def steps_that_fit(self, done_steps: int, total_steps: int, step_s: float) -> int | None:
        """The run's new total steps when the current one would end more than LATE_FRACTION of the budget
        late or EARLY_FRACTION early at step_s a step (the last epoch's), else None. At least one
        step more is always left: the run ends with its evaluation and report."""
        per_epoch = self.plan.steps_per_epoch
        done_epochs = done_steps // per_epoch

        def cost(total: int) -> float:  # what is left to pay for a run of `total` steps
            epochs = math.ceil(total / per_epoch)
            evaluations = (1 if self.eval_every == 0 else
                           evaluations_in(epochs, self.eval_every) - evaluations_in(done_epochs, self.eval_every))
            return ((total - done_steps) * step_s + (epochs - done_epochs) * PER_EPOCH_S
                    + evaluations * self.plan.evaluation_s + FINAL_S)

        left = self.deadline - self.clock()
        late = cost(total_steps) - left
        if -EARLY_FRACTION * self.plan.budget_s <= late <= LATE_FRACTION * self.plan.budget_s:
            return None
        total = done_steps + max(1, math.floor((left - FINAL_S) / step_s))
        while total > done_steps + 1 and cost(total) > left:
            total -= max(1, math.floor((cost(total) - left) / step_s))
        total = max(total, done_steps + 1)
        return None if total == total_steps else total
