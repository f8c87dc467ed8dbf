"""A training command's run, from its configuration to its end: resolved once (recipe, resume,
destinations), for the command line, --dry-run and the Python API alike, then trained in its
claimed folder."""
from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from resnet_cifar.config import LENGTH_SHAPED_SCHEDULERS, TrainConfig
from resnet_cifar.data.datasets import DataSpec, check_spec, load_dataset
from resnet_cifar.errors import UserError
from resnet_cifar.recipes import apply_length, apply_recipe, apply_short_run
from resnet_cifar.results.tensorboard_log import require_tensorboard
from resnet_cifar.runfiles import run_files
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.runfiles.destinations import ResumeTarget, check_train, data_reads, place
from resnet_cifar.training.loop import Interrupted, train_model
from resnet_cifar.training.resume import (
    check_data_matches,
    keep_trained_precision,
    recorded_options,
    resume_config,
)
from resnet_cifar.training.route_choice import choose_route, remember_cost, wants_route
from resnet_cifar.training.run_folder import check_seed_dirs, prepare_run_dir, remove_if_unused
from resnet_cifar.training.time_budget import BudgetWatch, measure_and_plan
from resnet_cifar.utils import distributed
from resnet_cifar.utils.devices import resolve_device
from resnet_cifar.utils.distributed import Distributed
from resnet_cifar.utils.interrupts import StopSignals
from resnet_cifar.utils.launcher import program, torchrun_target
from resnet_cifar.utils.timings import PhaseClock, format_timings, process_age_s, write_timings


@dataclass(frozen=True)
class ResolvedRun:
    """A training command resolved: its configuration (recipe applied, or the checkpoint's with what a
    resume may change), where it writes, and the lines to say before it starts."""

    config: TrainConfig
    explicit: frozenset[str]
    launch: Distributed
    resume: Path | None = None
    payload: dict | None = None
    target: ResumeTarget | None = None  # where a resume continues
    seeds: tuple[int, ...] | None = None
    recorded: dict | None = None  # a resume's options for config.json (resume.recorded_options)
    notes: tuple[str, ...] = ()
    finished: str | None = field(default=None)  # a resumed run with nothing left to do: the line that says so


def resolve_run(config: TrainConfig, explicit: set[str], resume: Path | None = None,
                seeds: list[int] | None = None, environ: Mapping[str, str] | None = None) -> ResolvedRun:
    """Every refusal that needs no data read, and the configuration the run will train with: a new
    run's recipe applied, or a resumed run's recorded options with what this command may change.
    After a torchrun restart, the job's own last.pt is resumed."""
    launch = distributed.describe_launch(environ)
    check_start(config, explicit, resume, seeds, launch)
    restarted = restart_checkpoint(config, launch) if launch.max_restarts > 0 and resume is None else None
    if restarted is None and resume is None:
        # Where the run writes and what it reads depend on no recipe: refused before a route is timed.
        if seeds is not None and config.run_dir is not None:
            check_seed_dirs(config.run_dir, seeds, data_reads(DataSpec.of(config.to_dict())))
        else:
            check_train(config, "run_dir" in explicit)
        notes: tuple[str, ...] = ()
        if wants_route(config, explicit):
            # The route is the budget's to choose: the chosen recipe and model are the run's, as if typed.
            config, line = choose_route(config, explicit, launch.world_size)
            notes = (line,)
        else:
            config = apply_recipe(config, explicit)
        return ResolvedRun(config, frozenset(explicit), launch, seeds=tuple(seeds) if seeds is not None else None,
                           notes=notes)
    resume, payload = restarted if restarted is not None else (resume, load_checkpoint(resume))
    config = resume_config(TrainConfig.from_dict(payload["config"]), config, explicit)
    config, kept = keep_trained_precision(config, payload, explicit)
    resolved = ResolvedRun(config, frozenset(explicit), launch, resume, payload, notes=(kept,) if kept else ())
    if payload["epoch"] >= config.epochs:
        further = ("start a new run to train longer" if config.scheduler in LENGTH_SHAPED_SCHEDULERS
                   else "pass a larger --epochs to train further")
        return replace(resolved, finished=f"{resume}: this run already finished all {payload['epoch']} epochs; "
                                          f"nothing to do ({further})")
    target = check_train(config, "run_dir" in explicit, resume, payload)
    return replace(resolved, target=target, recorded=recorded_options(place(resume).parent, payload, config,
                                                                      explicit))


def check_start(config: TrainConfig, explicit: set[str], resume: Path | None, seeds: list[int] | None,
                launch: Distributed) -> None:
    """The refusals of a training command that need nothing read: how it is started, not what it trains."""
    if resume is not None and seeds is not None:
        raise UserError("--seeds starts or finishes a set of runs: to finish a stopped set, run the command that "
                        "started it again (without --resume)")
    if seeds is not None:
        if "seed" in explicit:
            raise UserError("--seed and --seeds both choose the seed; give one of them")
        if len(set(seeds)) != len(seeds):
            raise UserError(f"--seeds lists a seed twice: {' '.join(map(str, seeds))}")
    check_spec(DataSpec.of(config.to_dict()))
    if config.tensorboard:
        require_tensorboard()
    if launch.max_restarts > 0 and resume is None:
        if config.run_dir is None:
            raise UserError("torchrun --max-restarts needs --run-dir, where a restarted job finds its last.pt "
                            "(the default run dir is named by the start time)")
        if seeds is not None:
            raise UserError("torchrun --max-restarts with --seeds: run one seed per job (--seed N)")


@contextlib.contextmanager
def joined(launch: Distributed, config: TrainConfig) -> Iterator[Distributed]:
    """torchrun's process group for the length of the run (a single process: nothing to join)."""
    dist = distributed.start(launch, config.device, config.dist_timeout, config.sync_bn)
    try:
        yield dist
    finally:
        distributed.stop(dist)


def restart_checkpoint(config: TrainConfig, launch: Distributed) -> tuple[Path, dict] | None:
    """Under torchrun --max-restarts: after a restart, the run directory's last.pt (path and
    loaded payload) when this job (TORCHELASTIC_RUN_ID) wrote it; None on the first attempt or
    before the first checkpoint.

    A checkpoint of another job is never picked up: pointing --run-dir at an old run is refused
    as usual, on every attempt."""
    if launch.restart_count == 0:
        return None
    run_dir = Path(config.run_dir)
    last = run_dir / "last.pt"
    if last.exists():
        payload = load_checkpoint(last)
        if payload.get("elastic_run_id") == launch.run_id:
            if launch.is_main:
                print(f"torchrun restart {launch.restart_count}: resuming from {last}")
            return last, payload
        return None
    if launch.is_main and run_files.written_by_job(run_dir, launch.run_id):
        run_files.remove_run_files(run_dir)  # the failed attempt's config.json and metrics.csv, no checkpoint yet
    return None


def run_training(run: ResolvedRun, dist: Distributed | None = None, first_in_process: bool = True,
                 resume_hint: str | None = None) -> tuple[int, dict]:
    """Train a resolved run (new, or resumed from its payload); returns (exit code, train_model's
    summary). first_in_process: the process's start-up is this run's (with --seeds, the first
    seed's only). resume_hint: what to print after a stop instead of the resume command (a --seeds
    set's own)."""
    config, explicit, payload = run.config, set(run.explicit), run.payload
    dist = dist if dist is not None else Distributed()
    before_run_s = process_age_s() if first_in_process else None
    # When this run's wall time began: the process's start for its first run (a --time-budget counts it).
    started = time.perf_counter() - (before_run_s or 0.0)
    clock = PhaseClock()
    resolve_device(config.device)  # fail on a bad --device before anything is written
    with clock.phase("data"):
        data = load_dataset(DataSpec.of(config.to_dict()))
    if payload is not None:
        check_data_matches(payload, data)
    train_images = len(data.train) - config.val_size
    if train_images < 1:
        raise UserError(f"--val-size {config.val_size} holds out every training image ({len(data.train)}); "
                        f"choose a smaller --val-size")
    if config.batch_size > train_images:
        raise UserError(f"--batch-size {config.batch_size} is larger than the training set ({train_images} images)")
    # Each process read (or did not find) the checkpoint on its own node's file system.
    if not dist.same_everywhere(payload["global_step"] if payload is not None else -1):
        raise UserError("the processes disagree about the checkpoint to resume (a node cannot see the run "
                        "directory's last.pt, or sees another one): put the run directory on a shared file system")
    # From the first file written on, a signal stops the run at a safe point (a checkpoint, or nothing left).
    with StopSignals() as signals:
        run_dir, created, config, held = prepare_run_dir(config, run.target, run.resume, dist)
        try:
            return _train_in(run_dir, config, explicit, data, payload, dist, clock, started, before_run_s, signals,
                             resume_hint, run.recorded)
        except BaseException:
            if held is not None:
                held.release()  # first: the lock file is one of the folder's files
            if dist.is_main:
                remove_if_unused(run_dir, created)
            raise
        finally:
            if held is not None:
                held.release()


def _train_in(run_dir: Path, config: TrainConfig, explicit: set[str], data, payload: dict | None,
              dist: Distributed, clock: PhaseClock, started: float, before_run_s: float | None,
              signals: StopSignals, resume_hint: str | None, recorded: dict | None) -> tuple[int, dict]:
    """run_training's part in the claimed run folder."""
    train_images = len(data.train) - config.val_size
    budget = None
    if config.time_budget is not None and config.iterations is None:
        with clock.phase("setup"):
            plan = measure_and_plan(config, data, dist, started)
        config = replace(config, iterations=plan.steps)
        budget = BudgetWatch(plan, started + plan.budget_s, config.eval_every)
        if dist.is_main:
            print(plan.describe(config.time_budget))
            if dist.world_size == 1:  # the routes are ranked at one process's speed
                remember_cost(config, plan, len(data.test) if data.test is not None else 0)
    if payload is None:  # a resumed run keeps the values it recorded
        steps_per_epoch = train_images // config.batch_size
        config, length = apply_length(config, explicit, steps_per_epoch)
        config, short = apply_short_run(config, explicit, steps_per_epoch)
        for line in (length, short):
            if line and dist.is_main:
                print(line)
    try:
        summary = train_model(config, data, run_dir, resume=payload, dist=dist, clock=clock, signals=signals,
                              recorded=recorded, budget=budget)
    except Interrupted as stop:
        if dist.is_main:
            name = signal.Signals(stop.signum).name
            hint = resume_hint or f"resume with: {resume_command(dist, stop.checkpoint)}"
            print(f"{name}: stopped after saving {stop.checkpoint}; {hint}", file=sys.stderr)
        return 128 + stop.signum, {}
    if summary.get("accuracy") is not None and dist.is_main:
        print(f"done: {summary['split']} accuracy {100 * summary['accuracy']:.2f}% (final epoch, "
              f"tta {summary['tta']}), checkpoint {summary['checkpoint']}")
    if dist.is_main:
        timings = clock.summary(before_run_s)
        write_timings(run_dir, timings)
        print(format_timings(timings))
    return 0, summary


def resume_command(dist: Distributed, checkpoint: Path) -> str:
    """The command that resumes this run from checkpoint, ready to paste."""
    tokens = shlex.join(["--mode", "train", "--resume", str(checkpoint)])
    if not dist.active:
        return f"{program()} {tokens}"
    if dist.local_world_size == dist.world_size:
        return f"torchrun --standalone --nproc-per-node={dist.world_size} {torchrun_target()} {tokens}"
    return f"torchrun [the job's node options] {torchrun_target()} {tokens}"
