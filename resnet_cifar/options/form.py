"""The form every command-line option is declared in: its flag, type or choices, default, help,
the modes that read it, what a resume may do with it, and whether it is part of the experiment."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnet_cifar.config import TrainConfig

MODES = ("train", "eval", "predict", "export", "summary")
GROUPS = {
    "general": "",
    "optimisation": "",
    "augmentation": "",
    "hardware": "",
    "several processes": "launch with torchrun (e.g. torchrun --standalone --nproc-per-node=2 main.py ...); "
                         "--batch-size is then the global batch, split among the processes",
}

# What a resume does with a training option (Option.resume):
REFUSED = "refused"  # a typed value that differs from the checkpoint's is refused: it would be another experiment
ALLOWED = "allowed"  # a typed value replaces the checkpoint's; untyped, the checkpoint's value is kept
INVOCATION = "per invocation"  # always this command line's value (typed or default), never the checkpoint's
RESUME_RULES = (REFUSED, ALLOWED, INVOCATION)



_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_FROM_TRAIN_CONFIG = object()  # the default is the TrainConfig field's


@dataclass(frozen=True)
class Option:
    dest: str
    help: str
    modes: tuple[str, ...]  # the modes that read it; any other mode refuses it
    group: str = "general"
    kind: str = "value"  # value, switch (store_true), no-switch (--no-X, store_false), boolean (--X/--no-X), positional
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    default: Any = _FROM_TRAIN_CONFIG
    nargs: str | None = None
    metavar: str | None = None
    resume: str | None = None  # training options: REFUSED, ALLOWED or INVOCATION
    experiment: bool = True  # training options: two runs that differ in it are different experiments
    flag_name: str | None = None  # the flag when it is not --<dest with dashes>

    @property
    def flag(self) -> str:
        if self.kind == "positional":
            return self.dest
        if self.flag_name is not None:
            return self.flag_name
        return "--" + self.dest.replace("_", "-")

    @property
    def default_value(self) -> Any:
        if self.default is not _FROM_TRAIN_CONFIG:
            return self.default
        field = _TRAIN_FIELDS[self.dest]
        value = field.default
        return list(value) if isinstance(value, tuple) else value

    @property
    def in_train_config(self) -> bool:
        return self.dest in _TRAIN_FIELDS


def train_option(dest: str, help: str, *, resume: str = REFUSED, experiment: bool = True, modes=("train",),
           **kwargs) -> Option:
    return Option(dest, help, modes, resume=resume, experiment=experiment, **kwargs)


