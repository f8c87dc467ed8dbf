"""Train and evaluate ResNets on CIFAR-10 from the command line.

    python main.py --model resnet18 --mode train
    python main.py --model resnet20 --recipe paper
    python main.py --mode eval --checkpoint runs/<run>/last.pt
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from augmentations import PAD_MODES, POLICIES, TTA_MODES
from checkpoints import load_checkpoint
from config import (
    MILESTONE_UNITS,
    PER_INVOCATION,
    PRECISIONS,
    RESUME_OVERRIDABLE,
    SCHEDULERS,
    WARMUP_STYLES,
    WEIGHTS,
    EvalConfig,
    TrainConfig,
)
from datasets import load_cifar10
from devices import resolve_device
from errors import UserError
from evaluation import evaluate_checkpoint
from models import MODEL_NAMES
from recipes import RECIPE_NAMES, apply_recipe, describe_recipes
from runs import check_writable, default_run_dir, prepare_new_run_dir
from seeds import SeedSummary, seed_run_dir, write_summary
from training import Interrupted, data_summary, train_model

MODES = ("train", "eval")


class UsageError(UserError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so main() reports one line."""

    def error(self, message: str):
        raise UsageError(message)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, except empty ones and the inverted value of a --no-X switch."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action, argparse._StoreFalseAction):
            return action.help
        return super()._get_help_string(action)


def _number(kind, low=None, low_inclusive=False, high=None, high_inclusive=True, what="number"):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite {what}, got {text!r}")
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if high is not None and (value > high or (value == high and not high_inclusive)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


positive_int = _number(int, low=1, low_inclusive=True, what="an integer >= 1")
non_negative_int = _number(int, low=0, low_inclusive=True, what="an integer >= 0")
positive_float = _number(float, low=0, what="a number > 0")
non_negative_float = _number(float, low=0, low_inclusive=True, what="a number >= 0")
unit_interval = _number(float, low=0, low_inclusive=True, high=1, high_inclusive=False, what="a number in [0, 1)")
open_unit_interval = _number(float, low=0, high=1, high_inclusive=False, what="a number in (0, 1)")
cutout_size = _number(int, low=0, low_inclusive=True, high=32, what="an integer from 0 (off) to 32")
gamma_type = _number(float, low=0, high=1, what="a number in (0, 1]")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = _Parser(
        prog="main.py",
        description="Train and evaluate ResNets on CIFAR-10.",
        epilog=describe_recipes(),
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )

    def default(value):
        return argparse.SUPPRESS if suppress_defaults else value

    add = parser.add_argument
    add("--mode", choices=MODES, default=default("train"), help="train a model or evaluate a checkpoint")
    add("--model", choices=MODEL_NAMES, default=default(defaults.model), metavar="NAME",
        help=f"architecture: {', '.join(MODEL_NAMES)}")
    add("--recipe", choices=RECIPE_NAMES, default=default(defaults.recipe),
        help="named hyperparameters (listed at the end); any option typed overrides its value")
    add("--data-dir", default=default(defaults.data_dir),
        help="folder with cifar-10-batches-py/ or train/<class>/ + test/<class>/ image folders")
    add("--no-download", dest="download", action="store_false", default=default(True),
        help="never download CIFAR-10; fail if it is not in --data-dir")
    add("--run-dir", default=default(None), help="output folder (default runs/<model>-<timestamp>)")
    add("--resume", default=default(None), metavar="CHECKPOINT", help="continue a run from its last.pt")
    add("--checkpoint", default=default(None), help="checkpoint to evaluate (--mode eval)")
    add("--output", default=default(None), metavar="FILE.json", help="write eval results as JSON")
    add("--weights", choices=WEIGHTS, default=default("raw"),
        help="--mode eval: the trained weights, or their moving average (a run made with --ema)")
    add("--tta", choices=TTA_MODES, default=default(defaults.tta),
        help="test-time augmentation for evaluation (each epoch and --mode eval): logits averaged over the "
             "image and its mirror (flip), and one-pixel shifts of both (flip-translate)")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=positive_int, default=default(defaults.epochs), help="epochs to train")
    group.add_argument("--iterations", type=positive_int, default=default(None),
                       help="optimizer steps to train in all, instead of --epochs (the last epoch may be partial)")
    group.add_argument("--batch-size", type=positive_int, default=default(defaults.batch_size),
                       help="training batch size")
    group.add_argument("--lr", type=positive_float, default=default(defaults.lr), help="peak learning rate")
    group.add_argument("--momentum", type=unit_interval, default=default(defaults.momentum), help="SGD momentum")
    group.add_argument("--weight-decay", type=non_negative_float, default=default(defaults.weight_decay),
                       help="L2 weight decay")
    group.add_argument("--nesterov", action="store_true", default=default(False), help="Nesterov momentum")
    group.add_argument("--label-smoothing", type=unit_interval, default=default(defaults.label_smoothing),
                       help="cross-entropy label smoothing")
    group.add_argument("--clip-grad-norm", type=positive_float, default=default(None), metavar="MAX_NORM",
                       help="clip the global gradient norm")
    group.add_argument("--scheduler", choices=SCHEDULERS, default=default(defaults.scheduler),
                       help="plateau divides the lr by 10 when the monitored loss stops improving")
    group.add_argument("--milestones", type=positive_int, nargs="+", default=default(list(defaults.milestones)),
                       help="when multistep multiplies the lr by --gamma, in --milestone-unit")
    group.add_argument("--milestone-unit", choices=MILESTONE_UNITS, default=default(defaults.milestone_unit),
                       help="--milestones counts epochs or optimizer steps (iterations)")
    group.add_argument("--step-size", type=positive_int, default=default(defaults.step_size),
                       help="epochs between lr drops for --scheduler step")
    group.add_argument("--gamma", type=gamma_type, default=default(defaults.gamma),
                       help="lr factor for step, multistep and plateau")
    group.add_argument("--plateau-patience", type=non_negative_int, default=default(defaults.plateau_patience),
                       help="epochs without improvement before plateau lowers the lr")
    group.add_argument("--warmup-epochs", type=non_negative_float, default=default(defaults.warmup_epochs),
                       help="lr warmup (for onecycle: the rising phase, default 30%%; triangular: default 20%%)")
    group.add_argument("--warmup-steps", type=non_negative_int, default=default(defaults.warmup_steps),
                       help="lr warmup in optimizer steps (overrides --warmup-epochs when > 0)")
    group.add_argument("--warmup-style", choices=WARMUP_STYLES, default=default(defaults.warmup_style),
                       help="linear: from 0 up to --lr; constant: --lr / 10 throughout the warmup (He et al.)")
    group.add_argument("--val-size", type=non_negative_int, default=default(defaults.val_size),
                       help="training images held out for validation (plateau and best.pt use them)")
    group.add_argument("--seed", type=non_negative_int, default=default(defaults.seed),
                       help="seeds initialisation, validation split and data order")
    group.add_argument("--seeds", type=non_negative_int, nargs="+", default=default(None), metavar="SEED",
                       help="train one run per seed into RUN_DIR/seed<N>/ and print mean ± std of the final "
                            "test accuracy")
    group.add_argument("--ema", type=open_unit_interval, default=default(None), metavar="DECAY",
                       help="keep an exponential moving average of the weights (e.g. 0.999), evaluated each epoch")

    group = parser.add_argument_group("augmentation")
    group.add_argument("--translate-pad", choices=PAD_MODES, default=default(defaults.translate_pad),
                       help="padding of the random crop (4 pixels): zeros or the mirrored image")
    group.add_argument("--cutout", type=cutout_size, default=default(defaults.cutout), metavar="N",
                       help="zero an N x N square per image after normalisation (DeVries & Taylor 2017); 0: off")
    group.add_argument("--augment", choices=POLICIES, default=default(defaults.augment),
                       help="a torchvision policy per image: AutoAugment (CIFAR-10 policy), RandAugment, "
                            "TrivialAugmentWide")
    group.add_argument("--mixup", type=non_negative_float, default=default(defaults.mixup), metavar="ALPHA",
                       help="mixup with lambda ~ Beta(ALPHA, ALPHA); 0: off")
    group.add_argument("--cutmix", type=non_negative_float, default=default(defaults.cutmix), metavar="ALPHA",
                       help="CutMix with lambda ~ Beta(ALPHA, ALPHA); 0: off (with --mixup: one of the two per batch)")
    group.add_argument("--max-steps", type=positive_int, default=default(None),
                       help="stop after this many optimizer steps in total (smoke runs, benchmarks)")

    group = parser.add_argument_group("hardware")
    group.add_argument("--device", default=default(defaults.device), help="auto, cpu, cuda or cuda:N")
    group.add_argument("--precision", choices=PRECISIONS, default=default(defaults.precision),
                       help="auto: bf16 where the device runs it fast, else fp32 (CPU) or fp16 (CUDA)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=default(None),
                       help="NHWC memory layout (default: chosen with --precision)")
    group.add_argument("--compile", action="store_true", default=default(False), help="torch.compile the model")
    group.add_argument("--deterministic", action="store_true", default=default(False),
                       help="deterministic algorithms (CPU and CUDA); slower on CUDA")
    group.add_argument("--threads", type=positive_int, default=default(None), help="CPU threads for torch")
    group.add_argument("--quiet", action="store_true", default=default(False), help="no progress bars")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def explicit_options(argv: Sequence[str] | None) -> set[str]:
    """The option names (dests) the user actually typed, as opposed to defaults."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        # Absolute, so that eval from another folder finds the data through the checkpoint.
        model=args.model, recipe=args.recipe, data_dir=str(Path(args.data_dir).absolute()), download=args.download,
        run_dir=args.run_dir, epochs=args.epochs, iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay, nesterov=args.nesterov, label_smoothing=args.label_smoothing,
        scheduler=args.scheduler, milestones=tuple(args.milestones), milestone_unit=args.milestone_unit,
        step_size=args.step_size, gamma=args.gamma, plateau_patience=args.plateau_patience,
        warmup_epochs=args.warmup_epochs, warmup_steps=args.warmup_steps, warmup_style=args.warmup_style,
        translate_pad=args.translate_pad, cutout=args.cutout, augment=args.augment, mixup=args.mixup,
        cutmix=args.cutmix, ema=args.ema, tta=args.tta,
        val_size=args.val_size, seed=args.seed, device=args.device, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, max_steps=args.max_steps,
        clip_grad_norm=args.clip_grad_norm, deterministic=args.deterministic, threads=args.threads,
        quiet=args.quiet,
    )


def resume_config(saved: TrainConfig, requested: TrainConfig, explicit: set[str]) -> TrainConfig:
    """The saved config, with the options the user typed that a resume may change and this
    command's per-invocation options. Any other typed option that differs from the checkpoint is
    refused, naming both values.
    """
    saved_values, requested_values = saved.to_dict(), requested.to_dict()
    changes = {name: requested_values[name] for name in PER_INVOCATION}
    for name in sorted(explicit & set(saved_values)):
        if requested_values[name] == saved_values[name]:
            continue
        if name not in RESUME_OVERRIDABLE:
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} {requested_values[name]} conflicts with the checkpoint's {name} "
                f"{saved_values[name]}; drop {flag} to resume, or start a new run"
            )
        changes[name] = requested_values[name]
    return TrainConfig.from_dict({**saved_values, **changes})


def check_data_matches(payload: dict, data) -> None:
    saved, found = payload.get("data", {}), data_summary(data)
    for key in ("classes", "n_train", "n_test"):
        if key in saved and saved[key] != found[key]:
            raise UserError(
                f"the data set differs from the checkpoint's: {key} is {found[key]} in --data-dir "
                f"but {saved[key]} in the checkpoint"
            )


def _remove_if_unused(run_dir: Path, created: bool) -> None:
    """Undo a new run directory that never got a checkpoint, so a failed start leaves no files."""
    if not created or (run_dir / "last.pt").exists():
        return
    for name in ("config.json", "metrics.csv"):
        try:
            (run_dir / name).unlink()
        except OSError:
            pass
    try:
        run_dir.rmdir()
    except OSError:
        pass  # it holds files we did not write: leave them alone


def train_command(args: argparse.Namespace, explicit: set[str]) -> int:
    config = train_config_from_args(args)
    if args.resume is not None and args.seeds is not None:
        raise UsageError("--seeds starts new runs; resume each seed's run with --resume RUN_DIR/seed<N>/last.pt")
    if args.resume is not None:
        payload = load_checkpoint(Path(args.resume))
        config = resume_config(TrainConfig.from_dict(payload["config"]), config, explicit)
        if payload["epoch"] >= config.epochs:
            print(f"{args.resume}: this run already finished all {payload['epoch']} epochs; nothing to do "
                  f"(pass a larger --epochs to train further)")
            return 0
        return run_training(config, explicit, payload, Path(args.resume))[0]
    config = apply_recipe(config, explicit)
    if args.seeds is None:
        return run_training(config, explicit)[0]
    return seeds_command(config, explicit, args.seeds)


def seeds_command(config: TrainConfig, explicit: set[str], seeds: list[int]) -> int:
    """One run per seed into RUN_DIR/seed<N>/, then the final test accuracies' mean ± std."""
    if "seed" in explicit:
        raise UsageError("--seed and --seeds both choose the seed; give one of them")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds lists a seed twice: {' '.join(map(str, seeds))}")
    root = Path(config.run_dir) if config.run_dir else default_run_dir(config.model)
    accuracies = []
    for seed in seeds:
        print(f"seed {seed}: run dir {seed_run_dir(root, seed)}")
        code, summary = run_training(TrainConfig.from_dict({**config.to_dict(), "seed": seed,
                                                            "run_dir": str(seed_run_dir(root, seed))}), explicit)
        if code != 0 or summary.get("test_accuracy") is None:
            print(f"seed {seed} did not finish; seeds after it were not run", file=sys.stderr)
            return code or 1
        accuracies.append(summary["test_accuracy"])
    result = SeedSummary(tuple(seeds), tuple(accuracies))
    print(result.line(config.tta))
    print(f"wrote {write_summary(root, result, config.tta)}")
    return 0


def run_training(config: TrainConfig, explicit: set[str], payload: dict | None = None,
                 resume_path: Path | None = None) -> tuple[int, dict]:
    """Train a new run, or resume one from payload; returns (exit code, train_model's summary)."""
    resolve_device(config.device)  # fail on a bad --device before anything is written
    data = load_cifar10(Path(config.data_dir), download=config.download)
    if payload is not None:
        check_data_matches(payload, data)
    if config.batch_size > len(data.train) - config.val_size:
        raise UserError(
            f"--batch-size {config.batch_size} is larger than the training set "
            f"({len(data.train) - config.val_size} images)"
        )
    if resume_path is not None:
        run_dir = Path(config.run_dir) if "run_dir" in explicit else resume_path.resolve().parent
        check_writable(run_dir)
        created = False
    else:
        run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config.model)
        created = not run_dir.exists()
        prepare_new_run_dir(run_dir)
    try:
        summary = train_model(config, data, run_dir, resume=payload)
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        print(f"{name}: stopped after saving {stop.checkpoint}; resume with: "
              f"python main.py --mode train --resume {stop.checkpoint}", file=sys.stderr)
        return 128 + stop.signum, {}
    except UserError:
        _remove_if_unused(run_dir, created)
        raise
    if summary.get("test_accuracy") is not None:
        print(f"done: test accuracy {100 * summary['test_accuracy']:.2f}% (final epoch, tta {summary['tta']}), "
              f"checkpoint {summary['checkpoint']}")
    return 0, summary


def eval_config_from_args(args: argparse.Namespace, explicit: set[str]) -> EvalConfig:
    if args.checkpoint is None:
        raise UserError("--mode eval needs --checkpoint PATH (e.g. runs/<run>/last.pt)")
    return EvalConfig(
        checkpoint=args.checkpoint,
        data_dir=args.data_dir if "data_dir" in explicit else None,
        download=args.download,
        device=args.device,
        precision=args.precision,
        channels_last=args.channels_last,
        output=args.output,
        quiet=args.quiet,
        weights=args.weights,
        tta=args.tta,
    )


def eval_command(args: argparse.Namespace, explicit: set[str]) -> int:
    config = eval_config_from_args(args, explicit)
    expected_model = args.model if "model" in explicit else None
    report = evaluate_checkpoint(config, expected_model=expected_model)
    print(f"{report['model']} ({report['weights']} weights, tta {report['tta']}) on {report['n']} test images: "
          f"accuracy {100 * report['accuracy']:.2f}%, loss {report['loss']:.4f}")
    for name, accuracy in report["per_class_accuracy"].items():
        print(f"  {name:>12s} {100 * accuracy:6.2f}%")
    if config.output:
        write_json(Path(config.output), report)
        print(f"wrote {config.output}")
    return 0


def write_json(path: Path, report: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write --output {path}: {e.strerror or e}") from None


# Options that belong to one mode, with a hint for the option the user probably meant.
MODE_OPTIONS = {
    "eval": {"checkpoint": ("--checkpoint", "; to continue training use --resume PATH"), "output": ("--output", ""),
             "weights": ("--weights", "")},
    "train": {"resume": ("--resume", "; to evaluate a checkpoint use --checkpoint PATH"), "run_dir": ("--run-dir", ""),
              "seeds": ("--seeds", ""), "recipe": ("--recipe", "")},
}


def check_mode_options(mode: str, explicit: set[str]) -> None:
    """Refuse an option of the other mode rather than silently ignoring it."""
    for owner, options in MODE_OPTIONS.items():
        for dest, (flag, hint) in options.items():
            if owner != mode and dest in explicit:
                raise UsageError(f"{flag} is for --mode {owner}{hint}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        explicit = explicit_options(argv)
        check_mode_options(args.mode, explicit)
        if args.mode == "eval":
            return eval_command(args, explicit)
        return train_command(args, explicit)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
