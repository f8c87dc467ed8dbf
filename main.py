"""Train and evaluate ResNets on CIFAR-10 from the command line.

    python main.py --model resnet18 --mode train
    python main.py --model resnet20 --recipe paper
    python main.py --mode eval --checkpoint runs/<run>/last.pt --report-dir report/
    python main.py --mode predict --checkpoint runs/<run>/last.pt photos/
    python main.py --mode export --checkpoint runs/<run>/last.pt --format onnx --output model.onnx
    python main.py --mode summary runs/*
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from augmentations import PAD_MODES, POLICIES, TTA_MODES
from commands import eval_command, export_command, predict_command, summary_command, train_command
from config import (
    MILESTONE_UNITS,
    PRECISIONS,
    SCHEDULERS,
    SPLITS,
    WARMUP_STYLES,
    WEIGHTS,
    EvalConfig,
    ExportConfig,
    PredictConfig,
    TrainConfig,
)
from errors import UserError
from exporting import FORMATS
from models import DROPOUT_MODELS, MODEL_NAMES
from recipes import RECIPE_NAMES, describe_recipes

MODES = ("train", "eval", "predict", "export", "summary")


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
    add("--mode", choices=MODES, default=default("train"),
        help="train a model; eval, predict with or export a checkpoint; summary of run directories")
    add("paths", nargs="*", default=default([]), metavar="PATH",
        help="--mode predict: image files and folders; --mode summary: run directories")
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
    add("--output", default=default(None), metavar="FILE",
        help="eval: the report as JSON; predict, summary: CSV; export: the exported model")
    add("--report-dir", default=default(None), metavar="DIR",
        help="eval: also write report.json, per_class.csv, confusion.png, calibration.png, mistakes.png here")
    add("--split", choices=SPLITS, default=default("test"),
        help="eval: the test set, or the validation images of a run trained with --val-size")
    add("--top-k", type=positive_int, default=default(3), help="predict: classes listed per image")
    add("--format", choices=FORMATS, default=default(None), help="export: the file format")
    add("--weights", choices=WEIGHTS, default=default("raw"),
        help="--mode eval: the trained weights, or their moving average (a run made with --ema)")
    add("--tta", choices=TTA_MODES, default=default(defaults.tta),
        help="test-time augmentation for evaluation (each epoch and --mode eval): logits averaged over the "
             "image and its mirror (flip), and one-pixel shifts of both (flip-translate)")
    add("--eval-every", type=non_negative_int, default=default(defaults.eval_every), metavar="N",
        help="train: evaluate on val/test after every N-th epoch and after the last (0: after the last only)")

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
    group.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=default(False),
                       help="Nesterov momentum (--no-nesterov turns off a recipe's)")
    group.add_argument("--label-smoothing", type=unit_interval, default=default(defaults.label_smoothing),
                       help="cross-entropy label smoothing")
    group.add_argument("--dropout", type=unit_interval, default=default(defaults.dropout), metavar="P",
                       help=f"dropout between the two convolutions of each block ({', '.join(DROPOUT_MODELS)}); "
                            f"0: off")
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
    group.add_argument("--tensorboard", action="store_true", default=default(False),
                       help="also write TensorBoard event files in the run directory (needs tensorboard)")

    group = parser.add_argument_group(
        "several processes", "launch with torchrun (e.g. torchrun --standalone --nproc-per-node=2 main.py ...); "
        "--batch-size is then the global batch, split evenly among the processes")
    group.add_argument("--sync-bn", action="store_true", default=default(False),
                       help="BatchNorm statistics over the global batch (SyncBatchNorm; CUDA only)")
    group.add_argument("--dist-timeout", type=positive_float, default=default(defaults.dist_timeout),
                       metavar="SECONDS", help="how long a process waits for a lost peer before the job fails")
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
        momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.nesterov,
        label_smoothing=args.label_smoothing, dropout=args.dropout,
        scheduler=args.scheduler, milestones=tuple(args.milestones), milestone_unit=args.milestone_unit,
        step_size=args.step_size, gamma=args.gamma, plateau_patience=args.plateau_patience,
        warmup_epochs=args.warmup_epochs, warmup_steps=args.warmup_steps, warmup_style=args.warmup_style,
        translate_pad=args.translate_pad, cutout=args.cutout, augment=args.augment, mixup=args.mixup,
        cutmix=args.cutmix, ema=args.ema, tta=args.tta, eval_every=args.eval_every,
        val_size=args.val_size, seed=args.seed, device=args.device, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, max_steps=args.max_steps,
        clip_grad_norm=args.clip_grad_norm, deterministic=args.deterministic, threads=args.threads,
        quiet=args.quiet, tensorboard=args.tensorboard, sync_bn=args.sync_bn, dist_timeout=args.dist_timeout,
    )


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
        split=args.split,
        report_dir=args.report_dir,
    )


def predict_config_from_args(args: argparse.Namespace) -> PredictConfig:
    if args.checkpoint is None:
        raise UsageError("--mode predict needs --checkpoint PATH and image files or folders")
    if not args.paths:
        raise UsageError("--mode predict needs image files or folders after the options")
    return PredictConfig(checkpoint=args.checkpoint, inputs=tuple(args.paths), top_k=args.top_k, output=args.output,
                         device=args.device, weights=args.weights)


def export_config_from_args(args: argparse.Namespace, explicit: set[str]) -> ExportConfig:
    if args.checkpoint is None or args.format is None or args.output is None:
        raise UsageError(f"--mode export needs --checkpoint PATH, --format {{{','.join(FORMATS)}}} and --output FILE")
    return ExportConfig(checkpoint=args.checkpoint, format=args.format, output=args.output,
                        data_dir=args.data_dir if "data_dir" in explicit else None, weights=args.weights)


# The options each mode reads: train, its TrainConfig's fields (but num_classes, which no flag
# sets) and how the run starts; the others, what their config_from_args functions take. A mode
# refuses an option it does not read rather than silently ignoring it.
MODE_READS = {
    "train": {field.name for field in dataclasses.fields(TrainConfig)} - {"num_classes"} | {"resume", "seeds"},
    "eval": {"checkpoint", "data_dir", "download", "device", "precision", "channels_last", "output", "quiet",
             "weights", "tta", "split", "report_dir", "model"},
    "predict": {"checkpoint", "paths", "top_k", "output", "device", "weights"},
    "export": {"checkpoint", "format", "output", "data_dir", "weights"},
    "summary": {"paths", "output"},
}
# The option the user probably meant, where one is taken for another.
MODE_HINTS = {"checkpoint": "; to continue training use --resume PATH",
              "resume": "; to evaluate a checkpoint use --checkpoint PATH"}


def modes_reading(dest: str) -> tuple[str, ...]:
    return tuple(mode for mode in MODES if dest in MODE_READS[mode])


def check_mode_options(mode: str, explicit: set[str]) -> None:
    """Refuse an option that the chosen mode does not use."""
    for dest in sorted(explicit - {"mode"}):
        modes = modes_reading(dest)
        if mode not in modes:
            flag = "image or run-directory paths" if dest == "paths" else "--" + dest.replace("_", "-")
            owners = " or ".join(f"--mode {m}" for m in modes)
            raise UsageError(f"{flag} {'are' if dest == 'paths' else 'is'} for {owners}{MODE_HINTS.get(dest, '')}")


def rank_prefix(environ) -> str:
    """'[rank N] ' under torchrun with several processes: each process reports its own errors."""
    world_size = environ.get("WORLD_SIZE", "1")
    several = world_size.isdigit() and int(world_size) > 1
    return f"[rank {environ.get('RANK', '?')}] " if several else ""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        explicit = explicit_options(argv)
        check_mode_options(args.mode, explicit)
        if args.mode != "train" and rank_prefix(os.environ):
            raise UsageError(f"--mode {args.mode} runs in one process: start it with python main.py, not torchrun")
        if args.mode == "eval":
            return eval_command(eval_config_from_args(args, explicit),
                                expected_model=args.model if "model" in explicit else None)
        if args.mode == "predict":
            return predict_command(predict_config_from_args(args))
        if args.mode == "export":
            return export_command(export_config_from_args(args, explicit))
        if args.mode == "summary":
            if not args.paths:
                raise UsageError("--mode summary needs one or more run directories")
            return summary_command(args.paths, args.output)
        return train_command(train_config_from_args(args), explicit,
                             resume=Path(args.resume) if args.resume is not None else None, seeds=args.seeds)
    except UserError as e:
        print(f"error: {rank_prefix(os.environ)}{e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as a program killed by SIGPIPE would,
        # and point stdout at /dev/null so that Python's flush at exit does not raise again.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown.

    Tearing down torch's and matplotlib's modules object by object took ~1.5 s after every command
    on a 2-core CPU (bench/README.md), longer than a ResNet-18 epoch on an H200. By the time main()
    returns every file is complete (checkpoints, metrics and reports written and renamed, the
    TensorBoard writer closed, the checkpoint thread joined): only the standard streams need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
