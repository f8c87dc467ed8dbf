"""--dry-run: resolve a command's configuration and check it as the real command would, without
reading the data set or writing any file; the result is printed as JSON.

What needs the data set (the batch against the training set's size, the data's classes against a
checkpoint's) is not checked, and the plan says so.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resnet_cifar.cli.summary import read_runs
from resnet_cifar.config import EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.data.datasets import DataSpec
from resnet_cifar.data.loader import check_global_batch
from resnet_cifar.errors import UserError
from resnet_cifar.recipes import apply_length, apply_short_run
from resnet_cifar.results.evaluation import check_model_name, load_model, run_precision, run_tta
from resnet_cifar.results.exporting import check_sidecar, require_packages, sidecar_of
from resnet_cifar.results.predict import collect_paths
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.runfiles.destinations import check_eval, check_export, check_predict, check_summary, place
from resnet_cifar.training.assembly import check_schedule
from resnet_cifar.training.run import resolve_run
from resnet_cifar.utils import distributed
from resnet_cifar.utils.devices import resolve_device, resolve_precision

NEEDS_THE_DATA = ("the batch size against the training set, the data's classes (a folder's number of classes) and "
                  "image size (the data set is not read)")


def print_plan(plan: dict[str, Any]) -> int:
    print(json.dumps(plan, indent=2, sort_keys=True, default=str))
    return 0


def plan_train(config: TrainConfig, explicit: set[str], resume: Path | None = None,
               seeds: list[int] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The run that `train_command` would start, resolved as it resolves it."""
    run = resolve_run(config, explicit, resume, seeds, environ)
    config, launch = run.config, run.launch
    plan: dict[str, Any] = {"mode": "train", "processes": launch.world_size}
    if run.notes and run.resume is None:
        plan["route"] = run.notes[0]
    if run.resume is not None:
        run_dir = run.target.run_dir if run.target is not None else place(run.resume).parent  # finished
        plan.update(resume=str(run.resume), epochs_done=run.payload["epoch"], finished=run.finished is not None,
                    continues_in_place=run.target is not None and run.target.in_place,
                    resumed_from=run.target.origin if run.target is not None else None)
    else:
        # The length a run of epochs or of a time budget gets is known once the data set is read; what
        # can be said without it is said here.
        config, length = apply_length(config, explicit, steps_per_epoch=None)
        config, short = apply_short_run(config, explicit, steps_per_epoch=None)
        if short:
            plan["short_run"] = short
        if length:
            plan["length"] = length
        run_dir = Path(config.run_dir) if config.run_dir else None
        plan["seeds"] = seeds
    check_schedule(config)
    spec = DataSpec.of(config.to_dict())
    if spec.num_classes is not None:
        config = dataclasses.replace(config, num_classes=spec.num_classes)
    device = distributed.check_launch(launch, config.device, config.sync_bn)
    check_global_batch(config.batch_size, launch.world_size)
    if config.precision == "auto" and config.channels_last is None:
        precision = channels_last = "measured when the run starts (precision_choice.py; cached)"
    else:
        precision, channels_last = resolve_precision(device, config.precision, config.channels_last)
    if config.time_budget is not None and config.iterations is None:
        plan["length"] = f"--time-budget {config.time_budget}: the steps that fit are measured when the run starts"
    resolved = config.to_dict()
    if spec.num_classes is None:
        resolved["num_classes"] = "the number of class folders (the data set is not read)"
    plan.update(run_dir=str(run_dir) if run_dir else f"runs/{config.model}-<start time>", device=str(device),
                precision=precision, channels_last=channels_last, config=resolved, not_checked=NEEDS_THE_DATA)
    return plan


def _checkpoint_model(path: str, weights: str, expected_model: str | None = None) -> tuple[dict, dict[str, Any]]:
    """The checkpoint (loaded and verified, its model rebuilt with the asked weights) and a summary."""
    payload = load_checkpoint(Path(path))
    check_model_name(payload, expected_model)
    load_model(payload, Path(path), weights)
    return payload, {"model": payload["model_name"], "epochs_done": payload["epoch"],
                     "classes": list(payload["classes"])}


def plan_eval(config: EvalConfig, expected_model: str | None = None) -> dict[str, Any]:
    check_eval(config)
    payload, checkpoint = _checkpoint_model(config.checkpoint, config.weights, expected_model)
    check_eval(config, payload)
    checkpoint["tta"] = run_tta(config, payload)
    device = resolve_device(config.device)
    precision, channels_last = run_precision(device, config, payload)
    return {"mode": "eval", "checkpoint": checkpoint, "device": str(device), "precision": precision,
            "channels_last": channels_last, "config": _fields(config),
            "not_checked": "the data's classes against the checkpoint's (the data set is not read)"}


def plan_predict(config: PredictConfig) -> dict[str, Any]:
    check_predict(config)
    paths = collect_paths(config.inputs)
    if not paths:
        raise UserError(f"no image files found in {' '.join(config.inputs)}")
    _, checkpoint = _checkpoint_model(config.checkpoint, config.weights)
    return {"mode": "predict", "checkpoint": checkpoint, "device": str(resolve_device(config.device)),
            "images": len(paths), "config": _fields(config)}


def plan_export(config: ExportConfig) -> dict[str, Any]:
    sidecar = sidecar_of(config.format, Path(config.output))
    check_export(config, sidecar=sidecar)
    check_sidecar(config.format, Path(config.output))
    require_packages(config.format)
    payload, checkpoint = _checkpoint_model(config.checkpoint, config.weights)
    check_export(config, payload, sidecar)
    return {"mode": "export", "checkpoint": checkpoint, "config": _fields(config)}


def plan_summary(run_dirs: list[str], output: str | None) -> dict[str, Any]:
    check_summary(run_dirs, output)
    runs = read_runs(run_dirs)
    return {"mode": "summary", "runs": [str(run.run_dir) for run in runs], "output": output}


def _fields(config) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(config).items()}
