"""The training loop and the whole run: steps, epochs, checkpoints, resume (what each epoch and
the finished run report is in epoch_results.py)."""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.datasets import Dataset
from resnet_cifar.data.loader import BatchLoader
from resnet_cifar.errors import UserError
from resnet_cifar.optim.schedules import set_lr
from resnet_cifar.recipes import describe_recipe
from resnet_cifar.results.evaluation import EvalInterrupted
from resnet_cifar.results.plots import CurvesPlot
from resnet_cifar.results.tensorboard_log import TensorBoardLog
from resnet_cifar.runfiles import checkpoints, run_files
from resnet_cifar.training.assembly import RunParts, StepContext, build_run, describe_run, unwrap
from resnet_cifar.training.checkpoint_state import EpochTotals, TrainState, build_payload, restore_payload
from resnet_cifar.training.epoch_results import Log, epoch_row, evaluate_epoch, format_epoch_line, write_final_reports
from resnet_cifar.utils.devices import autocast
from resnet_cifar.utils.distributed import Distributed, fault_injector
from resnet_cifar.utils.interrupts import StopSignals
from resnet_cifar.utils.progress import make_progress, run_eta
from resnet_cifar.utils.timings import PhaseClock

LOG_EVERY_STEPS = 20  # how often the bar, the NaN check and (fp16) overflow count sync with the device
SYNC_AT_LEAST_EVERY_S = 5.0  # and at least this often, in seconds of wall time


# ---------------------------------------------------------------------------------------------
# One step, one epoch


class NonFiniteLoss(UserError):
    pass


class Interrupted(Exception):
    """Raised after a resumable checkpoint was saved because a stop signal arrived."""

    def __init__(self, signum: int, checkpoint: Path):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.checkpoint = checkpoint


def train_step(ctx: StepContext, inputs: torch.Tensor, targets: torch.Tensor, lr: float,
               whiten_bias_lr: float | None = None):
    """One SGD step; returns (summed loss, number correct) as device tensors (no sync).

    targets are labels (B,) or, with mixup/CutMix, probabilities (B, classes); then "correct"
    is the weight the target gives the predicted class (lambda or 1 - lambda when the prediction
    is one of the two mixed classes), so train accuracy measures agreement with the mixed target.
    """
    set_lr(ctx.optimizer, lr, whiten_bias_lr)
    with autocast(ctx.device, ctx.precision):
        logits = ctx.model(inputs)
        loss = ctx.criterion(logits, targets)
    ctx.optimizer.zero_grad(set_to_none=True)
    weight = share_weight(ctx, len(targets))
    ctx.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    if ctx.clip_grad_norm is not None:
        ctx.scaler.unscale_(ctx.optimizer)
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.clip_grad_norm)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    if ctx.ema is not None:
        ctx.ema.update(unwrap(ctx.model))
    if ctx.lookahead is not None:
        ctx.lookahead.after_step(unwrap(ctx.model))
    predicted = logits.argmax(1)
    if targets.dim() == 2:
        correct = targets.gather(1, predicted[:, None]).sum()
    else:
        correct = (predicted == targets).sum()
    return loss.detach().float() * targets.shape[0], correct


def share_weight(ctx: StepContext, share: int) -> float:
    """What this process's mean loss is weighted by so that the gradient DDP averages over the W
    processes is the gradient of the global batch's mean loss: with shares n_r of a global batch
    B, (1/W) sum_r (W n_r / B) mean_r = (1/B) sum_i loss_i. 1 with equal shares or one process."""
    if not ctx.dist.active or not ctx.global_batch:
        return 1.0
    return share * ctx.dist.world_size / ctx.global_batch


@dataclass
class EpochOutcome:
    totals: EpochTotals
    steps_done: int  # steps of this epoch completed, counting those before a resume
    stop: str | None = None  # None: epoch complete; "signal" or "max_steps"


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
    loss_sum = torch.zeros((), device=ctx.device)
    # Mixed targets give fractional "correct" counts (see train_step).
    correct = torch.zeros((), dtype=torch.float32 if loader.mixes else torch.long, device=ctx.device)
    # The loss of every step since the last sync, checked for NaN/Inf at the sync: one copy a
    # step rather than a chain of small kernels (a small batch's GPU step is launch-bound).
    recent_losses = torch.zeros(LOG_EVERY_STEPS, device=ctx.device)
    step, stop, skipped = start_step, None, 0
    synced_step = start_step  # the step whose loss is recent_losses[0]
    started = time.perf_counter()
    seen_before = totals.seen
    bar = progress(total=epoch_steps, initial=start_step, desc=f"epoch {epoch + 1}")

    last_sync = started

    def sync(final: bool) -> None:
        nonlocal synced_step, last_sync
        last_sync = time.perf_counter()
        bad = (~torch.isfinite(recent_losses[: step - synced_step])).nonzero()
        if len(bad):
            raise NonFiniteLoss(
                f"loss became NaN/Inf at epoch {epoch + 1}, step {synced_step + int(bad[0]) + 1}; training "
                f"stopped and the last good checkpoint was kept (try a lower --lr or --clip-grad-norm)"
            )
        synced_step = step
        seen = totals.seen + (step - start_step) * loader.batch_size
        elapsed = max(1e-9, last_sync - started)
        eta = "" if run_steps_left is None else f" run ETA {run_eta(step - start_step, run_steps_left, elapsed)}"
        bar.set_postfix_str(
            f"loss {(totals.loss_sum + float(loss_sum)) / max(1, seen):.3f} "
            f"acc {100 * (totals.correct + correct.item()) / max(1, seen):.1f}% "
            f"lr {ctx.optimizer.param_groups[0]['lr']:.4g} "
            f"{(seen - seen_before) / elapsed:.0f} img/s{eta}",
            refresh=final,
        )

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
        lr = ctx.schedule.lr(epoch, step)
        whiten_bias_lr = ctx.schedule.whiten_bias_lr(epoch, step, lr)
        batch_loss, batch_correct = train_step(ctx, inputs, targets, lr, whiten_bias_lr)
        if scale_before is not None and ctx.scaler.get_scale() < scale_before:
            skipped += 1  # fp16 overflow: GradScaler skipped this update
        recent_losses[step - synced_step] = batch_loss
        loss_sum += batch_loss
        correct += batch_correct
        step += 1
        if step_budget is not None:
            step_budget -= 1
        bar.update(1)
        # A slow step (a large model on a CPU) syncs at once, so the first figures and the run's
        # ETA show after the first step rather than after LOG_EVERY_STEPS of them.
        if step % LOG_EVERY_STEPS == 0 or time.perf_counter() - last_sync > SYNC_AT_LEAST_EVERY_S:
            sync(final=False)
    if stop is None and step_budget is not None and step_budget <= 0 and step < epoch_steps:
        stop = "max_steps"
    sync(final=True)
    bar.close()
    # Each process summed its own share of the batches; the epoch's figures are over all of them.
    ctx.dist.sum_(loss_sum, correct)
    totals = EpochTotals(
        loss_sum=totals.loss_sum + float(loss_sum),
        correct=totals.correct + correct.item(),
        seen=totals.seen + (step - start_step) * loader.batch_size,
        seconds=totals.seconds + time.perf_counter() - started,
        skipped_steps=totals.skipped_steps + skipped,
    )
    return EpochOutcome(totals, step, stop)


# ---------------------------------------------------------------------------------------------
# The whole run


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


def writes_in_background(device: torch.device, world_size: int) -> bool:
    """Whether checkpoints are written on a background thread while the next epoch trains.

    On an accelerator the training thread mostly waits for the device and the CPU cores are free:
    there the write overlaps training (bench/epoch_end.py, one core free: 0.08 s of a 0.22 s
    write left on the training thread). On the CPU the step already uses every core and a write
    beside it cost more than one before it (0.28 s against 0.18 s on 2 cores). Under torchrun
    rank 0 writes at once and the others wait for it, so that a restarted job always finds the
    checkpoint of the epoch before the failure.
    """
    return device.type != "cpu" and world_size == 1


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
) -> dict:
    """Train (or resume) a run in run_dir; returns a summary dict.

    Raises Interrupted after saving a resumable checkpoint on SIGINT/SIGTERM, NonFiniteLoss on a
    NaN/Inf loss (keeping the last good checkpoint), UserError for anything the user can fix.
    Under torchrun (dist active) only rank 0 logs and writes files. on_end sees the run's parts
    when training stops (tests look at each rank's weights there). clock, when given, collects the
    seconds of each phase on this thread (timings.json). signals: the caller's StopSignals, when it
    installed them before writing the run's first file. recorded: a resumed run's options as its
    config.json recorded them (with what this command changed), kept as they are.
    """
    run_dir = Path(run_dir)
    dist = dist if dist is not None else Distributed()
    clock = clock if clock is not None else PhaseClock()
    log = log if dist.is_main else (lambda line: None)
    with clock.phase("setup"):
        parts = build_run(config, data, dist, model_state=resume["model_state"] if resume is not None else None)
    config, device, precision, channels_last = parts.config, parts.device, parts.precision, parts.channels_last
    model, ctx = parts.model, parts.ctx
    state = TrainState()
    metrics = run_files.MetricsLog(run_dir / "metrics.csv")
    if resume is not None:
        try:
            state = restore_payload(resume, ctx)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
            # The checksum says the file is whole; these say its training state is not one a run wrote.
            raise UserError(f"the checkpoint's training state cannot be restored (damaged or foreign: "
                            f"{type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        log(f"resumed {config.model} from epoch {state.epoch + 1}, step {state.step} "
            f"({state.global_step} steps done)")
    if dist.is_main:
        if resume is not None:
            checkpoints.remove_stale_temporaries(run_dir)
            metrics.truncate_after(state.epoch)
        measured = parts.precision_choice.figures if parts.precision_choice is not None else None
        options = config.to_dict() if recorded is None else {**recorded, "run_dir": config.run_dir,
                                                             "resumed_from": config.resumed_from}
        run_files.write_config(run_dir, {**options, "resolved_device": str(device),
                                         "resolved_precision": precision, "resolved_channels_last": channels_last,
                                         "auto_precision_img_per_s": measured,
                                         "world_size": dist.world_size, "elastic_run_id": dist.run_id})

    writer = checkpoints.CheckpointWriter(background=writes_in_background(device, dist.world_size))
    curves = CurvesPlot(run_dir / "curves.png", metrics.rows)

    def save(name: str, wait: bool = False) -> Path:
        """Rank 0 writes; the others wait, so that none exits (and makes torchrun stop the job)
        while the file is being written. wait: the file is on disk when this returns."""
        path = run_dir / name
        if not all(bool(p.isfinite().all()) for p in model.parameters()):
            raise NonFiniteLoss(
                f"the weights became NaN/Inf in epoch {state.epoch + 1}; {name} was not overwritten "
                f"(try a lower --lr or --clip-grad-norm)"
            )
        with clock.phase("checkpoints"):
            dist.broadcast_buffers(model)
            if dist.is_main:
                writer.save(path, build_payload(parts, state, data))
                if wait:
                    writer.wait()
            dist.barrier()
        return path

    def draw_curves(force: bool) -> None:
        with clock.phase("curves"):
            curves.update(force=force)

    def save_on_stop() -> Path:
        """last.pt on disk and the curves up to date before the run says it stopped."""
        path = save("last.pt", wait=True)
        if dist.is_main:
            draw_curves(force=True)
        return path

    progress = make_progress(config.quiet or not dist.is_main)
    last_final = None  # the latest evaluation of the report split (test, or val without a test set)
    report_split = parts.report_split
    # Events past the checkpoint's epoch are dropped: a resumed run rewrites them.
    board = TensorBoardLog(run_dir, purge_epoch=state.epoch + 1) if config.tensorboard and dist.is_main else None
    stops = contextlib.nullcontext(signals) if signals is not None else StopSignals()
    with stops as signals, writer, board if board is not None else contextlib.nullcontext():
        # Logged once the handlers are in place: from this line on, a signal always saves.
        log(describe_run(parts, len(data.test) if data.test is not None else 0, run_dir))
        if parts.precision_choice is not None:
            log(parts.precision_choice.describe())
        log(describe_recipe(config.recipe))
        if device.type == "cpu" and precision == "fp16":
            log("warning: fp16 has no fast CPU kernels (~25x slower than fp32 in bench/precision_matrix.py); "
                "prefer --precision bf16 or fp32 on a CPU")

        inject_fault = fault_injector(os.environ, dist)

        def stop_requested() -> bool:
            # torchrun forwards a signal to every worker, but a worker may get it a step later than
            # another (or alone, from kill): the ranks agree at each step boundary, so all stop at
            # the same step. The handler itself only sets a flag.
            inject_fault()
            return dist.max_int(signals.requested or 0) > 0

        def interrupted() -> Interrupted:
            signum = dist.max_int(signals.requested or 0)  # the signal some rank received
            return Interrupted(signum, save_on_stop())

        while state.epoch < config.epochs:
            epoch = state.epoch
            step_budget = None if config.max_steps is None else config.max_steps - state.global_step
            carried_seconds = state.totals.seconds  # a resumed epoch's part before the checkpoint
            outcome = train_epoch_explaining_compile(parts, state, step_budget, stop_requested, progress)
            clock.add("training", outcome.totals.seconds - carried_seconds)
            state.global_step += outcome.steps_done - state.step
            state.step, state.totals = outcome.steps_done, outcome.totals
            if outcome.stop == "signal":
                raise interrupted()
            if outcome.stop == "max_steps":
                path = save_on_stop()
                log(f"stopped after {state.global_step} steps (--max-steps); checkpoint {path}")
                if on_end is not None:
                    on_end(parts)
                return {"run_dir": str(run_dir), "stopped": "max_steps", "global_step": state.global_step,
                        "checkpoint": str(path)}
            try:
                with clock.phase("evaluation"):
                    results = (evaluate_epoch(parts, stop_requested,
                                              keep_predictions_of=report_split if epoch + 1 == config.epochs else None)
                               if config.evaluates_after(epoch) else {})
            except EvalInterrupted:
                raise interrupted() from None
            totals = state.totals
            row = epoch_row(epoch, ctx.optimizer.param_groups[0]["lr"], totals, results, config.tta)
            val, last_final = results.get("val"), results.get(report_split, last_final)
            ctx.schedule.end_epoch(val.loss if val is not None else row["train_loss"])
            improved = val is not None and (state.best_val_acc is None or val.accuracy > state.best_val_acc)
            if improved:
                state.best_val_acc = val.accuracy
            state.epoch, state.step, state.totals = epoch + 1, 0, EpochTotals()
            if dist.is_main:
                metrics.append(row)
                draw_curves(force=state.epoch == config.epochs)
                if board is not None:
                    board.log_epoch(row)
            save("last.pt")
            if improved:
                save("best.pt")
            log(format_epoch_line(row, config.epochs))
            if totals.skipped_steps:
                log(f"  fp16: {totals.skipped_steps} steps skipped by the GradScaler (gradient overflow)")
        with clock.phase("checkpoints"):
            writer.wait()  # the report reads the checkpoints
        if on_end is not None:
            on_end(parts)
        if dist.is_main and (run_dir / "last.pt").exists():
            with clock.phase("report"):
                write_final_reports(parts, data, run_dir, board, log, last_final, state.epoch)
    summary = {"run_dir": str(run_dir), "stopped": None, "global_step": state.global_step,
               "checkpoint": str(run_dir / "last.pt")}
    if last_final is not None:
        summary.update(accuracy=last_final.accuracy, loss=last_final.loss, split=report_split, tta=config.tta)
    return summary
