"""What each --mode does, given its configuration (cli/main.py turns the command line into one)."""
from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from resnet_cifar.cli.config_file import option_tokens
from resnet_cifar.cli.summary import format_lines as format_summary
from resnet_cifar.cli.summary import read_runs
from resnet_cifar.cli.summary import write_csv as write_summary_csv
from resnet_cifar.config import EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.data.datasets import DataSpec, load_dataset, trained_image_size
from resnet_cifar.data.loader import Normalizer
from resnet_cifar.errors import UserError
from resnet_cifar.models.techniques import model_options
from resnet_cifar.results.evaluation import evaluate_checkpoint, load_model
from resnet_cifar.results.exporting import ATOL, RTOL, check_sidecar, export_model, require_packages, sidecar_of
from resnet_cifar.results.metrics import format_report, write_json
from resnet_cifar.results.predict import collect_paths, decode_all, predict_images
from resnet_cifar.results.predict import write_csv as write_predictions_csv
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.runfiles.destinations import (
    check_eval,
    check_export,
    check_predict,
    check_summary,
)
from resnet_cifar.runfiles.run_files import default_run_dir
from resnet_cifar.training.route_choice import wants_route
from resnet_cifar.training.run import joined, resolve_run, run_training
from resnet_cifar.training.seeds import train_seeds
from resnet_cifar.utils.devices import resolve_device
from resnet_cifar.utils.launcher import program


def train_command(config: TrainConfig, explicit: set[str], resume: Path | None = None,
                  seeds: list[int] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """A new run (its recipe resolved), a resumed one, or one run per seed; under torchrun, one
    process of a distributed run (and, after a torchrun restart, the resumed run)."""
    run = resolve_run(config, explicit, resume, seeds, environ)
    if run.launch.is_main:
        for line in (*run.notes, run.finished):
            if line:
                print(line)
    if run.finished:
        return 0
    with joined(run.launch, run.config) as dist:
        if run.seeds is None:
            return run_training(run, dist)[0]
        # Every rank writes under rank 0's name: a default one holds its clock.
        root = dist.broadcast_object(run.config.run_dir or str(default_run_dir(run.config.model)))
        return train_seeds(replace(run, config=replace(run.config, run_dir=root)), dist,
                           finish_command(run.config, explicit, list(run.seeds), Path(root)))


def finish_command(config: TrainConfig, explicit: set[str], seeds: list[int], root: Path) -> str:
    """The command that finishes this --seeds set: its typed options, its folder and its seeds; and the
    route its budget picked, which a later choice (the routes' costs since measured) could change."""
    values = config.to_dict()
    chosen = {"recipe", "model"} if wants_route(config, explicit) else set()
    typed = {name: values[name] for name in sorted(explicit | chosen) if name in values and name != "run_dir"}
    tokens = ["--mode", "train", *option_tokens(typed, "the set's options"), "--run-dir", str(root),
              "--seeds", *map(str, seeds)]
    return f"{program()} {shlex.join(tokens)}"


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
