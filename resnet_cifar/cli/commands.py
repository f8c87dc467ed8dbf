"""What each --mode does, given its configuration (cli/main.py turns the command line into one)."""
from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from resnet_cifar.cli.config_file import option_tokens
from resnet_cifar.cli.summary import format_lines as format_summary
from resnet_cifar.cli.summary import read_runs
from resnet_cifar.cli.summary import write_csv as write_summary_csv
from resnet_cifar.config import LENGTH_SHAPED_SCHEDULERS, EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.data.datasets import DataSpec, check_spec, load_dataset, trained_image_size
from resnet_cifar.data.loader import Normalizer
from resnet_cifar.errors import UserError
from resnet_cifar.models.techniques import model_options
from resnet_cifar.recipes import apply_length, apply_recipe, apply_short_run
from resnet_cifar.results.evaluation import evaluate_checkpoint, load_model
from resnet_cifar.results.exporting import ATOL, RTOL, check_sidecar, export_model, require_packages, sidecar_of
from resnet_cifar.results.metrics import format_report, write_json
from resnet_cifar.results.predict import collect_paths, decode_all, predict_images
from resnet_cifar.results.predict import write_csv as write_predictions_csv
from resnet_cifar.results.seed_summary import SeedSummary, write_summary
from resnet_cifar.results.tensorboard_log import require_tensorboard
from resnet_cifar.runfiles import run_files
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.runfiles.claim import Claim, claim
from resnet_cifar.runfiles.destinations import (
    abandoned_start,
    check_eval,
    check_export,
    check_new_run_dir,
    check_predict,
    check_seed_dirs,
    check_summary,
    check_train,
    data_reads,
    place,
    writable_path,
)
from resnet_cifar.runfiles.run_files import create_run_dir, default_run_dir, seed_run_dir
from resnet_cifar.training.loop import Interrupted, train_model
from resnet_cifar.training.resume import check_data_matches, keep_trained_precision, resume_config
from resnet_cifar.training.time_budget import measure_and_plan
from resnet_cifar.utils import distributed
from resnet_cifar.utils.devices import resolve_device
from resnet_cifar.utils.distributed import Distributed
from resnet_cifar.utils.interrupts import StopSignals
from resnet_cifar.utils.launcher import program, torchrun_target
from resnet_cifar.utils.timings import PhaseClock, format_timings, process_age_s, write_timings


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """Undo a run directory that never got a checkpoint, so that a failed or stopped start leaves
    no files: the folder goes too when this command created it."""
    if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
        return
    run_files.remove_run_files(run_dir)
    if not created:
        return
    try:
        run_dir.rmdir()
    except OSError:
        pass  # it holds files we did not write: leave them alone


def train_command(config: TrainConfig, explicit: set[str], resume: Path | None = None,
                  seeds: list[int] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """A new run (its recipe resolved), a resumed one, or one run per seed; under torchrun, one
    process of a distributed run (and, after a torchrun restart, the resumed run)."""
    launch = distributed.describe_launch(environ)
    check_start(config, explicit, resume, seeds, launch)
    restarted = restart_checkpoint(config, launch) if launch.max_restarts > 0 and resume is None else None
    if restarted is not None:
        resume, payload = restarted
    elif resume is not None:
        payload = load_checkpoint(resume)
    if resume is not None:
        config = resume_config(TrainConfig.from_dict(payload["config"]), config, explicit)
        config, kept = keep_trained_precision(config, payload, explicit)
        if kept and launch.is_main:
            print(kept)
        if payload["epoch"] >= config.epochs:
            if launch.is_main:
                further = ("start a new run to train longer" if config.scheduler in LENGTH_SHAPED_SCHEDULERS
                           else "pass a larger --epochs to train further")
                print(f"{resume}: this run already finished all {payload['epoch']} epochs; nothing to do ({further})")
            return 0
        check_train(config, "run_dir" in explicit, resume, payload, None)
        recorded = recorded_options(place(resume).parent, payload, config, explicit)
        with joined(launch, config) as dist:
            return run_training(config, explicit, payload, resume, dist, recorded=recorded)[0]
    config = apply_recipe(config, explicit)
    check_train(config, "run_dir" in explicit, None, None, seeds)
    with joined(launch, config) as dist:
        if seeds is None:
            return run_training(config, explicit, dist=dist)[0]
        return seeds_command(config, explicit, seeds, dist)


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


def seeds_command(config: TrainConfig, explicit: set[str], seeds: list[int], dist: Distributed) -> int:
    """One run per seed into RUN_DIR/seed<N>/, then the final test accuracies' mean ± std. The same
    command again finishes an interrupted set: finished seeds are kept, the interrupted one resumes
    from its last.pt, the rest train."""
    root = Path(config.run_dir) if config.run_dir else Path(dist.broadcast_object(str(default_run_dir(config.model))))
    root = writable_path(root)
    reads = data_reads(DataSpec.of(config.to_dict()))
    on_main(dist, lambda: check_seed_dirs(root, seeds, reads))
    say = print if dist.is_main else (lambda *args, **kwargs: None)
    hint = f"finish the set with: {finish_command(config, explicit, seeds, root)}"
    with contextlib.ExitStack() as held:
        if dist.is_main:
            create_run_dir(root)
            held.enter_context(claim(root))
            check_seed_dirs(root, seeds, reads)  # again, now that no other process writes here
        accuracies, split = [], "test"
        for seed in seeds:
            folder = seed_run_dir(root, seed)
            seed_config = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "run_dir": str(folder)})
            finished = finished_seed(folder, seed_config, explicit) if (folder / "last.pt").exists() else None
            if finished is not None:
                say(f"seed {seed}: finished before, in {folder}")
                code, summary = 0, finished
            elif (folder / "last.pt").exists():
                say(f"seed {seed}: resuming {folder / 'last.pt'}")
                payload = load_checkpoint(folder / "last.pt")
                resumed = resume_config(TrainConfig.from_dict(payload["config"]), seed_config, explicit)
                code, summary = run_training(resumed, explicit, payload, folder / "last.pt", dist=dist,
                                             first_in_process=seed == seeds[0], resume_hint=hint,
                                             recorded=recorded_options(folder, payload, resumed, explicit))
            else:
                say(f"seed {seed}: run dir {folder}")
                code, summary = run_training(seed_config, explicit, dist=dist, first_in_process=seed == seeds[0],
                                             resume_hint=hint)
            if code != 0 or summary.get("accuracy") is None:
                say(f"seed {seed} did not finish; {hint}", file=sys.stderr)
                return code or 1
            accuracies.append(summary["accuracy"])
            split = summary["split"]
        result = SeedSummary(tuple(seeds), tuple(accuracies), split)
        say(result.line(config.tta))
        if dist.is_main:
            print(f"wrote {write_summary(root, result, config.tta)}")
    return 0


def finished_seed(folder: Path, config: TrainConfig, explicit: set[str]) -> dict | None:
    """A seed's run that finished before: its final accuracy as its last metrics row holds it, once
    the command's options are checked against the run's (as a resume checks them)."""
    payload = load_checkpoint(folder / "last.pt")
    resumed = resume_config(TrainConfig.from_dict(payload["config"]), config, explicit)
    if payload["epoch"] < resumed.epochs:
        return None
    rows = run_files.MetricsLog(folder / "metrics.csv").rows()
    split = "test" if rows and rows[-1].get("test_acc") else "val"
    accuracy = rows[-1].get(f"{split}_acc") if rows else None
    if not accuracy:
        raise UserError(f"{folder} finished but its metrics.csv holds no final accuracy; move it away and run the "
                        f"command again to train that seed anew")
    return {"accuracy": float(accuracy), "split": split}


def finish_command(config: TrainConfig, explicit: set[str], seeds: list[int], root: Path) -> str:
    """The command that finishes this --seeds set: its typed options, its folder and its seeds."""
    values = config.to_dict()
    typed = {name: values[name] for name in sorted(explicit) if name in values and name != "run_dir"}
    tokens = ["--mode", "train", *option_tokens(typed, "the set's options"), "--run-dir", str(root),
              "--seeds", *map(str, seeds)]
    return f"{program()} {shlex.join(tokens)}"


def recorded_options(folder: Path, payload: dict, resumed: TrainConfig, explicit: set[str]) -> dict:
    """What a resumed run's config.json keeps: the options its run recorded (config.json, or the
    checkpoint's where that file is gone), with only what this command typed and changed."""
    try:
        previous = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if not isinstance(previous, dict):
        previous = dict(payload["config"])
    saved, values = payload["config"], resumed.to_dict()
    changed = {name: values[name] for name in explicit if name in values and values[name] != saved.get(name)}
    if "epochs" in explicit:
        changed["iterations"] = values["iterations"]
    kept = {name: value for name, value in previous.items() if name in values}
    return {**values, **kept, **changed, "run_dir": values["run_dir"], "resumed_from": values["resumed_from"]}


def on_main(dist: Distributed, decide: Callable[[], Any]) -> Any:
    """Rank 0's answer to decide() (or its error) on every rank: one decision about the file system."""
    outcome: tuple[Any, str | None] = (None, None)
    if dist.is_main:
        try:
            outcome = (decide(), None)
        except UserError as e:
            outcome = (None, str(e))
    answer, error = dist.broadcast_object(outcome if dist.is_main else None)
    if error is not None:
        raise UserError(error)
    return answer


def prepare_run_dir(config: TrainConfig, explicit: set[str], resume_path: Path | None, payload: dict | None,
                    dist: Distributed) -> tuple[Path, bool, TrainConfig, Claim | None]:
    """The run directory, whether this call created it, the config with it, and rank 0's claim on
    it (None on the other ranks). Rank 0 decides (the default name holds its clock), creates and
    claims it. A resume continues in the checkpoint's own folder when it is that run's last.pt;
    else in a new folder that starts with the run's metrics so far and records where it came from,
    leaving that run as it is. A folder left by a start that saved no checkpoint is cleared first."""
    held: list[Claim] = []

    def decide() -> tuple[str, bool, dict | None]:
        target = None
        if resume_path is not None:
            target = check_train(config, "run_dir" in explicit, resume_path, payload, None)
            if target.in_place:
                held.append(claim(target.run_dir))
                return str(target.run_dir), False, None
        typed = target.run_dir if target is not None else config.run_dir
        run_dir = writable_path(Path(typed)) if typed is not None else default_run_dir(config.model)
        reads = data_reads(DataSpec.of(config.to_dict()))
        check_new_run_dir(run_dir, reads)
        created = not run_dir.exists()
        create_run_dir(run_dir)
        held.append(claim(run_dir))
        try:
            check_new_run_dir(run_dir, reads)  # again, now that no other process writes here
            if abandoned_start(run_dir):
                print(f"note: {run_dir} holds a start that saved no checkpoint; starting anew in it", file=sys.stderr)
                run_files.remove_run_files(run_dir)
            if target is not None:
                parent_rows = run_files.MetricsLog(Path(target.origin["run_dir"]) / "metrics.csv").rows()
                run_files.MetricsLog(run_dir / "metrics.csv").start_from(parent_rows)
                print(target.describe(resume_path, run_dir))
        except BaseException:
            held.pop().release()
            _remove_if_unused(run_dir, created)
            raise
        return str(run_dir), created, target.origin if target is not None else None

    run_dir, created, origin = on_main(dist, decide)
    config = replace(config, run_dir=run_dir, resumed_from=origin) if origin is not None else \
        replace(config, run_dir=run_dir) if config.run_dir is not None else config
    return Path(run_dir), created, config, (held[0] if held else None)


def run_training(config: TrainConfig, explicit: set[str], payload: dict | None = None,
                 resume_path: Path | None = None, dist: Distributed | None = None,
                 first_in_process: bool = True, resume_hint: str | None = None,
                 recorded: dict | None = None) -> tuple[int, dict]:
    """Train a new run, or resume one from payload; returns (exit code, train_model's summary).
    first_in_process: the process's start-up is this run's (with --seeds, the first seed's only).
    resume_hint: what to print after a stop instead of the resume command (a --seeds set's own).
    recorded: a resumed run's options for its config.json (recorded_options)."""
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
        run_dir, created, config, held = prepare_run_dir(config, explicit, resume_path, payload, dist)
        try:
            return _train_in(run_dir, config, explicit, data, payload, dist, clock, started, before_run_s, signals,
                             resume_hint, recorded)
        except BaseException:
            if held is not None:
                held.release()  # first: the lock file is one of the folder's files
            if dist.is_main:
                _remove_if_unused(run_dir, created)
            raise
        finally:
            if held is not None:
                held.release()


def _train_in(run_dir: Path, config: TrainConfig, explicit: set[str], data, payload: dict | None,
              dist: Distributed, clock: PhaseClock, started: float, before_run_s: float | None,
              signals: StopSignals, resume_hint: str | None, recorded: dict | None) -> tuple[int, dict]:
    """run_training's part in the claimed run folder."""
    train_images = len(data.train) - config.val_size
    if config.time_budget is not None and config.iterations is None:
        with clock.phase("setup"):
            plan = measure_and_plan(config, data, dist, started)
        config = replace(config, iterations=plan.steps)
        if dist.is_main:
            print(plan.describe(config.time_budget))
    if payload is None:  # a resumed run keeps the values it recorded
        steps_per_epoch = train_images // config.batch_size
        config, length = apply_length(config, explicit, steps_per_epoch)
        config, short = apply_short_run(config, explicit, steps_per_epoch)
        for line in (length, short):
            if line and dist.is_main:
                print(line)
    try:
        summary = train_model(config, data, run_dir, resume=payload, dist=dist, clock=clock, signals=signals,
                              recorded=recorded)
    except Interrupted as stop:
        if dist.is_main:
            name = signal.Signals(stop.signum).name
            hint = resume_hint or (f"resume with: {resume_command(dist)} "
                                   f"{shlex.join(['--mode', 'train', '--resume', str(stop.checkpoint)])}")
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


def resume_command(dist: Distributed) -> str:
    if not dist.active:
        return program()
    if dist.local_world_size == dist.world_size:
        return f"torchrun --standalone --nproc-per-node={dist.world_size} {torchrun_target()}"
    return f"torchrun [the job's node options] {torchrun_target()}"


def eval_command(config: EvalConfig, expected_model: str | None = None) -> int:
    """The checkpoint's report on the terminal; JSON with --output, pictures with --report-dir."""
    check_eval(config)
    payload = load_checkpoint(Path(config.checkpoint))
    check_eval(config, payload)
    report = evaluate_checkpoint(config, expected_model=expected_model, payload=payload)
    tta = f"tta {report['tta']}" + ("" if config.tta is not None else ", the run's")
    # With many classes, whether the answer is among the first five says as much as top-1.
    top5 = f", top-5 {100 * report['top5_accuracy']:.2f}%" if len(report["per_class_accuracy"]) > 10 else ""
    print(f"{report['model']} ({report['weights']} weights, {tta}) on {report['n']} {report['split']} images: "
          f"accuracy {100 * report['accuracy']:.2f}%{top5}, loss {report['loss']:.4f}")
    print(format_report(report))
    if config.output:
        write_json(Path(config.output), report)
        print(f"wrote {config.output}")
    if config.report_dir:
        print(f"wrote report.json, per_class.csv, confusion.png, calibration.png, mistakes.png in {config.report_dir}")
    return 0


def predict_command(config: PredictConfig) -> int:
    """Top-k classes per image. Exit 0 when every image was read, 1 when some failed, 2 when none."""
    check_predict(config)
    paths = collect_paths(config.inputs)
    if not paths:
        raise UserError(f"no image files found in {' '.join(config.inputs)}")
    payload = load_checkpoint(Path(config.checkpoint))
    device = resolve_device(config.device)
    model = load_model(payload, Path(config.checkpoint), config.weights).to(device)
    failures = []

    def report_failure(item) -> None:
        failures.append(item.path)
        print(f"skipped {item.path}: {item.error}", file=sys.stderr)

    predictions = []
    size = trained_image_size(payload)
    top_k = min(config.top_k, len(payload["classes"]))
    if top_k < config.top_k:
        print(f"note: --top-k {config.top_k} is more than the model's {top_k} classes; listing all {top_k}",
              file=sys.stderr)
    for prediction in predict_images(model, decode_all(paths, size), payload["mean"], payload["std"],
                                     payload["classes"], top_k, device, report_failure):
        predictions.append(prediction)
        if config.output is None:
            ranked = ", ".join(f"{name} {100 * p:.1f}%" for name, p in zip(prediction.classes,
                                                                             prediction.probabilities, strict=True))
            print(f"{prediction.path}: {ranked}")
    resized = sum(p.resized_from is not None for p in predictions)
    if resized:
        print(f"note: {resized} of {len(predictions)} images were not {size}x{size} and were resized to "
              f"{size}x{size} (bilinear) first", file=sys.stderr)
    if config.output is not None and predictions:
        write_predictions_csv(Path(config.output), predictions, top_k)
        print(f"wrote {len(predictions)} predictions to {config.output}")
    if not predictions:
        print(f"error: none of the {len(paths)} files could be read as an image", file=sys.stderr)
        return 2
    return 1 if failures else 0


def export_command(config: ExportConfig) -> int:
    """Write the model in the asked format, then check it against PyTorch on test images."""
    sidecar = sidecar_of(config.format, Path(config.output))
    check_export(config, sidecar=sidecar)
    check_sidecar(config.format, Path(config.output))
    require_packages(config.format)
    path = Path(config.checkpoint)
    payload = load_checkpoint(path)
    check_export(config, payload, sidecar)
    model = load_model(payload, path, config.weights)
    images, source = check_images(payload, config.data_dir)
    normalizer = Normalizer(tuple(payload["mean"]), tuple(payload["std"]), torch.device("cpu"))
    size = trained_image_size(payload)
    metadata = {"model": payload["model_name"], "model_options": model_options(payload.get("config", {})),
                "dataset": payload.get("dataset", "cifar10"),
                "classes": list(payload["classes"]), "mean": list(payload["mean"]), "std": list(payload["std"]),
                "image_size": size, "weights": config.weights,
                "input": f"float32 (N, 3, {size}, {size}), RGB, scaled to 0-1 then normalised with mean/std "
                         f"per channel"}
    result = export_model(model, config.format, Path(config.output), metadata,
                          normalizer(images, channels_last=False))
    sidecars = "".join(f" and {p}" for p in result.extra_files)
    print(f"wrote {result.path}{sidecars}; loaded back, its logits on {result.n_images} {source} match PyTorch's "
          f"(max |difference| {result.max_abs_diff:.2e}, allowed {ATOL} + {RTOL} x |logit|)")
    for note in result.notes:
        print(f"note: {note}")
    return 0


def check_images(payload: dict, data_dir: str | None, count: int = 64) -> tuple[torch.Tensor, str]:
    """The first test (or else training) images of the checkpoint's data set or, where it cannot be
    found, seeded random images (the comparison is about arithmetic, not accuracy)."""
    spec = DataSpec.of(payload["config"], data_dir, download=False)
    size = trained_image_size(payload)
    try:
        data = load_dataset(spec)
        if data.image_size == size:
            split, name = (data.test, "test") if data.test is not None else (data.train, "training")
            return split.images[:count], f"{name} images"
    except UserError:
        pass
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator),
            f"random images (no {spec.name} of {size}x{size} images in {spec.data_dir})")


def summary_command(run_dirs: list[str], output: str | None) -> int:
    check_summary(run_dirs, output)
    runs = read_runs(run_dirs)
    for line in format_summary(runs):
        print(line)
    if output:
        write_summary_csv(Path(output), runs)
        print(f"wrote {output}")
    return 0
