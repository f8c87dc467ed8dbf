"""Train and evaluate ResNets on CIFAR-10, CIFAR-100 and folders of small images from the command line.

    python main.py --model resnet18 --mode train
    python main.py --model resnet20 --recipe paper
    python main.py --dataset cifar100 --model resnet56 --recipe paper
    python main.py --mode eval --checkpoint runs/<run>/last.pt --report-dir report/
    python main.py --mode predict --checkpoint runs/<run>/last.pt photos/
    python main.py --mode export --checkpoint runs/<run>/last.pt --format onnx --output model.onnx
    python main.py --mode summary runs/*
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from resnet_cifar.cli.commands import eval_command, export_command, predict_command, summary_command, train_command
from resnet_cifar.cli.config_file import NOT_REPEATED, option_tokens, read_config_file
from resnet_cifar.cli.dry_run import plan_eval, plan_export, plan_predict, plan_summary, plan_train, print_plan
from resnet_cifar.config import FORMATS, EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.option_values import mode_config
from resnet_cifar.options import GROUPS, MODE_READS, MODES, OPTIONS, TRAIN_OPTIONS, Option, config_value
from resnet_cifar.recipes import describe_recipes
from resnet_cifar.utils.launcher import program


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


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser, one argument an entry of options.OPTIONS (suppress_defaults: only typed options)."""
    parser = _Parser(
        prog=program(),
        description="Train and evaluate ResNets on CIFAR-10, CIFAR-100 and folders of small images.",
        epilog=describe_recipes(),
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS if suppress_defaults else None,
    )
    groups = {name: (parser if name == "general" else parser.add_argument_group(name, description or None))
              for name, description in GROUPS.items()}
    for option in OPTIONS:
        add_option(groups[option.group], option, suppress_defaults)
    return parser


def add_option(group, option: Option, suppress_defaults: bool) -> None:
    default = argparse.SUPPRESS if suppress_defaults else option.default_value
    keywords: dict = {"default": default, "help": option.help.replace("%", "%%")}
    if option.kind == "positional":
        group.add_argument(option.dest, nargs=option.nargs, metavar=option.metavar, **keywords)
        return
    if option.kind == "switch":
        keywords["action"] = "store_true"
    elif option.kind == "no-switch":
        keywords["action"] = "store_false"
    elif option.kind == "boolean":
        keywords["action"] = argparse.BooleanOptionalAction
    else:
        keywords.update(type=option.type, choices=option.choices, nargs=option.nargs, metavar=option.metavar)
    action = group.add_argument(option.flag, dest=option.dest, **keywords)
    # Python 3.10's BooleanOptionalAction adds its own "(default: ...)", which the formatter adds again.
    action.help = keywords["help"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def with_config_file(argv: list[str]) -> list[str]:
    """argv after the options of its --config file, if it names one (typed options come last and win)."""
    config = parse_args(argv).config
    if config is None:
        return argv
    path = Path(config)
    return option_tokens(read_config_file(path), f"--config {path}", skip=NOT_REPEATED) + argv


def explicit_options(argv: Sequence[str] | None) -> set[str]:
    """The option names (dests) the user actually typed, as opposed to defaults."""
    return set(vars(build_parser(suppress_defaults=True).parse_args(argv)))


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{option.dest: config_value(option, getattr(args, option.dest)) for option in TRAIN_OPTIONS})


def eval_config_from_args(args: argparse.Namespace, explicit: set[str]) -> EvalConfig:
    if args.checkpoint is None:
        raise UserError("--mode eval needs --checkpoint PATH (e.g. runs/<run>/last.pt)")
    return mode_config(EvalConfig, "eval", {name: getattr(args, name) for name in explicit})


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
    return mode_config(ExportConfig, "export", {name: getattr(args, name) for name in explicit})


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
        argv = with_config_file(argv)
        args = parse_args(argv)
        explicit = explicit_options(argv)
        check_mode_options(args.mode, explicit)
        if args.mode != "train" and rank_prefix(os.environ):
            raise UsageError(f"--mode {args.mode} runs in one process: start it with {program()}, not torchrun")
        if args.mode == "eval":
            config = eval_config_from_args(args, explicit)
            expected_model = args.model if "model" in explicit else None
            if args.dry_run:
                return print_plan(plan_eval(config, expected_model))
            return eval_command(config, expected_model=expected_model)
        if args.mode == "predict":
            config = predict_config_from_args(args)
            return print_plan(plan_predict(config)) if args.dry_run else predict_command(config)
        if args.mode == "export":
            config = export_config_from_args(args, explicit)
            return print_plan(plan_export(config)) if args.dry_run else export_command(config)
        if args.mode == "summary":
            if not args.paths:
                raise UsageError("--mode summary needs one or more run directories")
            if args.dry_run:
                return print_plan(plan_summary(args.paths, args.output))
            return summary_command(args.paths, args.output)
        resume = Path(args.resume) if args.resume is not None else None
        if args.dry_run:
            return print_plan(plan_train(train_config_from_args(args), explicit, resume, args.seeds))
        return train_command(train_config_from_args(args), explicit, resume=resume, seeds=args.seeds)
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


def run() -> None:
    """The installed `resnet-cifar` command."""
    exit_now(main())
