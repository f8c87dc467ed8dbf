"""The whole run: its parts built, then epochs until the end, a stop signal or --max-steps, each
followed by its evaluation, its row and its checkpoint; then the final report."""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.datasets import Dataset
from resnet_cifar.errors import UserError
from resnet_cifar.recipes import describe_recipe
from resnet_cifar.results.evaluation import EvalInterrupted
from resnet_cifar.training.assembly import RunParts, build_run, describe_run
from resnet_cifar.training.checkpoint_state import EpochTotals, TrainState, restore_payload
from resnet_cifar.training.epoch import train_epoch_explaining_compile
from resnet_cifar.training.epoch_results import Log, epoch_row, evaluate_epoch, format_epoch_line, write_final_reports
from resnet_cifar.training.run_record import RunRecord
from resnet_cifar.training.time_budget import BudgetWatch
from resnet_cifar.utils.distributed import Distributed, fault_injector
from resnet_cifar.utils.interrupts import StopSignals
from resnet_cifar.utils.progress import make_progress
from resnet_cifar.utils.timings import PhaseClock


class Interrupted(Exception):
    """Raised after a resumable checkpoint was saved because a stop signal arrived."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.checkpoint = checkpoint


@dataclass
class StopAgreement:
    """Whether to stop, agreed by every process at each step boundary: torchrun forwards a signal to
    every worker, but one may get it a step later than another (or alone, from kill), so all stop
    at the same step. The signal handler itself only sets a flag."""

    signals: StopSignals
    dist: Distributed
    inject_fault: Callable[[], None]

    def requested(self) -> bool:
        self.inject_fault()
        return self.dist.max_int(self.signals.requested or 0) > 0

    def signum(self) -> int:
        return self.dist.max_int(self.signals.requested or 0)  # the signal some rank received


def train_model(
    config: TrainConfig,
    data: Dataset,
    run_dir: Path,
    resume: dict | None = None,
    log: Log = print,
    dist: Distributed | None = None,
    on_end: Callable[[RunParts], None] | None = None,
    clock: PhaseClock | None = None,
    signals: StopSignals | None = None,
    recorded: dict | None = None,
    budget: BudgetWatch | None = None,
) -> dict:
    """Train (or resume) a run in run_dir; returns a summary dict.

    Raises Interrupted after saving a resumable checkpoint on SIGINT/SIGTERM, NonFiniteLoss on a
    NaN/Inf loss (keeping the last good checkpoint), UserError for anything the user can fix.
    Under torchrun (dist active) only rank 0 logs and writes files. on_end sees the run's parts
    when training stops (tests look at each rank's weights there). clock, when given, collects the
    seconds of each phase on this thread (timings.json). signals: the caller's StopSignals, when it
    installed them before writing the run's first file. recorded: a resumed run's options as its
    config.json recorded them (with what this command changed), kept as they are. budget: a
    --time-budget run's ceiling, which may lay the rest of the run over fewer or more steps.
    """
    dist = dist if dist is not None else Distributed()
    clock = clock if clock is not None else PhaseClock()
    log = log if dist.is_main else (lambda line: None)
    with clock.phase("setup"):
        parts = build_run(config, data, dist, model_state=resume["model_state"] if resume is not None else None)
    state = restored_state(parts, resume, log)
    record = RunRecord(parts, data, run_dir, clock, first_epoch=state.epoch + 1)
    record.start(parts.config.to_dict() if recorded is None else
                 {**recorded, "run_dir": parts.config.run_dir, "resumed_from": parts.config.resumed_from},
                 resumed_at=state.epoch if resume is not None else None)
    stops = contextlib.nullcontext(signals) if signals is not None else StopSignals()
    with stops as signals, record:
        announce(parts, data, run_dir, log)  # once the handlers are in place: from here on, a signal always saves
        stop = StopAgreement(signals, dist, fault_injector(os.environ, dist))
        last_final, stopped_early = run_epochs(parts, state, record, stop, log, budget)
        if stopped_early is not None:
            if on_end is not None:
                on_end(parts)
            return stopped_early
        record.wait()  # the report reads the checkpoints
        if on_end is not None:
            on_end(parts)
        if dist.is_main and (Path(run_dir) / "last.pt").exists():
            with clock.phase("report"):
                write_final_reports(parts, data, Path(run_dir), record.board, log, last_final, state.epoch)
    summary = {"run_dir": str(run_dir), "stopped": None, "global_step": state.global_step,
               "checkpoint": str(Path(run_dir) / "last.pt")}
    if last_final is not None:
        summary.update(accuracy=last_final.accuracy, loss=last_final.loss, split=parts.report_split, tta=config.tta)
    return summary


def restored_state(parts: RunParts, resume: dict | None, log: Log) -> TrainState:
    """Where the run stands: the start, or a checkpoint's optimizer, schedule, RNG and counters."""
    if resume is None:
        return TrainState()
    try:
        state = restore_payload(resume, parts.ctx)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        # The checksum says the file is whole; these say its training state is not one a run wrote.
        raise UserError(f"the checkpoint's training state cannot be restored (damaged or foreign: "
                        f"{type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    log(f"resumed {parts.config.model} from epoch {state.epoch + 1}, step {state.step} "
        f"({state.global_step} steps done)")
    return state


def announce(parts: RunParts, data: Dataset, run_dir: Path, log: Log) -> None:
    """What is trained where, the precision chosen and the recipe, before the first step."""
    log(describe_run(parts, len(data.test) if data.test is not None else 0, Path(run_dir)))
    if parts.precision_choice is not None:
        log(parts.precision_choice.describe())
    log(describe_recipe(parts.config.recipe))
    if parts.device.type == "cpu" and parts.precision == "fp16":
        log("warning: fp16 has no fast CPU kernels (~25x slower than fp32 in bench/precision_matrix.py); "
            "prefer --precision bf16 or fp32 on a CPU")


def run_epochs(parts: RunParts, state: TrainState, record: RunRecord, stop: StopAgreement, log: Log,
               budget: BudgetWatch | None = None):
    """Epochs from state to the run's end; returns (the latest evaluation of the report split, the
    summary of a run stopped by --max-steps or None). Raises Interrupted on a stop signal."""
    clock = record.clock
    progress = make_progress(parts.config.quiet or not parts.dist.is_main)
    last_final = None  # the latest evaluation of the report split (test, or val without a test set)
    while state.epoch < parts.config.epochs:
        config, epoch, first_step = parts.config, state.epoch, state.global_step
        step_budget = None if config.max_steps is None else config.max_steps - state.global_step
        carried_seconds = state.totals.seconds  # a resumed epoch's part before the checkpoint
        outcome = train_epoch_explaining_compile(parts, state, step_budget, stop.requested, progress)
        clock.add("training", outcome.totals.seconds - carried_seconds)
        state.global_step += outcome.steps_done - state.step
        state.step, state.totals = outcome.steps_done, outcome.totals
        if outcome.stop == "signal":
            raise Interrupted(stop.signum(), record.save_on_stop(state))
        if outcome.stop == "max_steps":
            path = record.save_on_stop(state)
            log(f"stopped after {state.global_step} steps (--max-steps); checkpoint {path}")
            return last_final, {"run_dir": str(record.run_dir), "stopped": "max_steps",
                                "global_step": state.global_step, "checkpoint": str(path)}
        try:
            with clock.phase("evaluation"):
                results = (evaluate_epoch(parts, stop.requested,
                                          keep_predictions_of=parts.report_split if epoch + 1 == config.epochs
                                          else None)
                           if config.evaluates_after(epoch) else {})
        except EvalInterrupted:
            raise Interrupted(stop.signum(), record.save_on_stop(state)) from None
        last_final = results.get(parts.report_split, last_final)
        # Not after the run's first epoch: its first steps pay for allocation (the plan counted that).
        if budget is not None and epoch + 1 < config.epochs and first_step > 0:
            step_s = (outcome.totals.seconds - carried_seconds) / max(1, state.global_step - first_step)
            keep_to_budget(parts, record, budget, state.global_step, step_s, log)
        end_epoch(parts, state, record, results, log)
    return last_final, None


def keep_to_budget(parts: RunParts, record: RunRecord, budget: BudgetWatch, done_steps: int, step_s: float,
                   log: Log) -> None:
    """Lay the rest of the run over the steps that fit its budget at the last epoch's speed, when it
    would end late or early (time_budget.BudgetWatch); rank 0 decides for every process. The new
    length goes into config.json and the checkpoints, the schedule's new course into its state."""
    total = parts.config.iterations
    decided = budget.steps_that_fit(done_steps, total, step_s) if parts.dist.is_main else None
    new_total = parts.dist.broadcast_object(decided)
    if new_total is None:
        return
    epochs = math.ceil(new_total / len(parts.train_loader))
    parts.config = replace(parts.config, iterations=new_total, epochs=epochs)
    parts.ctx.schedule.replan(done_steps, new_total)
    if parts.ctx.lookahead is not None:
        parts.ctx.lookahead.total_steps = new_total
    record.record_length(new_total, epochs)
    log(f"time budget: {step_s:.3g} s a step (planned {budget.plan.step_s:.3g}); the rest of the run laid over "
        f"{new_total - done_steps:,} steps instead of {total - done_steps:,} ({new_total:,} in all)")


def end_epoch(parts: RunParts, state: TrainState, record: RunRecord, results: dict, log: Log) -> None:
    """The epoch's row, the schedule's step (plateau watches the validation loss), best.pt when the
    validation accuracy improved, last.pt, and the epoch's line."""
    config, epoch, totals = parts.config, state.epoch, state.totals
    row = epoch_row(epoch, parts.ctx.optimizer.param_groups[0]["lr"], totals, results, config.tta)
    val = results.get("val")
    parts.ctx.schedule.end_epoch(val.loss if val is not None else row["train_loss"])
    improved = val is not None and (state.best_val_acc is None or val.accuracy > state.best_val_acc)
    if improved:
        state.best_val_acc = val.accuracy
    state.epoch, state.step, state.totals = epoch + 1, 0, EpochTotals()
    record.end_epoch(row, final=state.epoch == config.epochs)
    record.save("last.pt", state)
    if improved:
        record.save("best.pt", state)
    log(format_epoch_line(row, config.epochs))
    if totals.skipped_steps:
        log(f"  fp16: {totals.skipped_steps} steps skipped by the GradScaler (gradient overflow)")
