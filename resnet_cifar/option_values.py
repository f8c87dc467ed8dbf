"""Options given by name in Python (the API) or read from a file, checked as the parser checks typed
ones, and the configurations made from them."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.options import BY_DEST, MODE_READS, TRAIN_OPTIONS, Option, config_value


def checked_value(option: Option, value: Any, caller: str) -> Any:
    """A value given in Python (the API) checked as the parser checks a typed one: the same types,
    ranges and choices; UserError naming the option and what it takes."""
    def refuse(what: str) -> UserError:
        return UserError(f"{caller}: {option.dest} takes {what}, got {shown(value)}")

    if option.kind in ("switch", "no-switch", "boolean"):
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if option.nargs in ("+", "*"):
        items = list(value) if isinstance(value, (list, tuple)) else None
        if items is None or (option.nargs == "+" and not items):
            raise refuse("a list of values")
        return [_checked_item(option, item, caller) for item in items]
    return _checked_item(option, value, caller)


def _checked_item(option: Option, value: Any, caller: str) -> Any:
    if option.choices is not None:
        if not isinstance(value, str) or value not in option.choices:
            raise UserError(f"{caller}: {option.dest} {shown(value)} is none of: {', '.join(option.choices)}")
        return value
    if option.type is None:
        if not isinstance(value, str):
            raise UserError(f"{caller}: {option.dest} takes a string, got {shown(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UserError(f"{caller}: {option.dest} takes {getattr(option.type, 'what', 'a value')}, "
                        f"got {shown(value)}")
    try:
        return option.type(str(value))
    except argparse.ArgumentTypeError as e:
        raise UserError(f"{caller}: {option.dest}: {e}") from None
    except ValueError:  # str() of an integer of thousands of digits
        raise UserError(f"{caller}: {option.dest} holds a number too long to be a value") from None


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut at 80 characters."""
    try:
        text = repr(value)
    except ValueError:
        return "a number too long to be a value"
    return text if len(text) <= 80 else text[:77] + "..."


def train_config_of(values: dict[str, Any], caller: str) -> tuple[TrainConfig, set[str]]:
    """A new run's configuration from options given by name (as config.json spells them), each
    checked as if typed; the names given are the explicit ones (a recipe leaves them)."""
    readable = sorted(o.dest for o in TRAIN_OPTIONS if "train" in o.modes)
    given: dict[str, Any] = {}
    for name, value in values.items():
        option = BY_DEST.get(name)
        if option is None or not option.in_train_config or "train" not in option.modes:
            raise UserError(f"{caller}: unknown option {name!r}; valid options: {', '.join(readable)}")
        if value is not None:
            given[name] = config_value(option, checked_value(option, value, caller))
    defaults = {o.dest: config_value(o, o.default_value) for o in TRAIN_OPTIONS if o.dest not in given}
    return TrainConfig(**defaults, **given), set(given)


def mode_config(cls: type, mode: str, values: dict[str, Any]) -> Any:
    """A mode's configuration (EvalConfig, ExportConfig) from the options given for it: each field an
    option of that mode, given or else the field's own default."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in values.items() if name in fields and name in MODE_READS[mode]})
