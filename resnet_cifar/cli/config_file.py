"""--config FILE: a run's config.json, or a JSON or YAML file a user writes, read as if its options
were typed before the command line's own (so that a typed option overrides the file's value).

Each key is an option's name as config.json spells it (`batch_size`, `lr`, `recipe`, ...). The
file's values go through the same parser and checks as typed ones, and count as typed: a recipe
does not replace them, so a run's config.json repeats that run.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resnet_cifar.errors import UserError
from resnet_cifar.option_values import shown
from resnet_cifar.options import BY_DEST, MODE_READS, RECORDED, Option

# What config.json records that is not a choice to repeat: the data's class count (read from the
# data), the run's folder (a repeat is a new run) and what the run resolved on its machine.
NOT_REPEATED = frozenset({"num_classes", "run_dir", *RECORDED})
# Options a file cannot set: they say what this command does, not how a model is trained.
COMMAND_ONLY = frozenset({"config", "dry_run", "paths"})
MAX_BYTES = 1_000_000  # far more than every option written out


def settable() -> tuple[str, ...]:
    return tuple(sorted(dest for dest in BY_DEST if dest not in COMMAND_ONLY))


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's options as a dict; one-line errors for a missing, unreadable or malformed file."""
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise UserError(f"--config {path} is not a regular file (a FIFO, device or socket)")
        if path.is_file() and path.stat().st_size > MAX_BYTES:
            raise UserError(f"--config {path} is {path.stat().st_size:,} bytes; a file of options holds at most "
                            f"{MAX_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"--config {path} is a folder; give a run's config.json or a .json/.yaml file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        values = _parse_yaml(text, path)
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"--config {path} is not valid JSON (line {e.lineno}: {e.msg}); "
                            f"name a .yaml file for YAML") from None
        except (ValueError, RecursionError) as e:  # a number of thousands of digits, arrays nested too deep
            reason = "nested too deep" if isinstance(e, RecursionError) else str(e).split(";")[0]
            raise UserError(f"--config {path} is not a file of options ({reason})") from None
    if not isinstance(values, dict):
        raise UserError(f"--config {path} must hold an object of option names and values, "
                        f"not {type(values).__name__}")
    return plan_options(values)


def plan_options(values: dict[str, Any]) -> dict[str, Any]:
    """What --dry-run prints (a plan: its mode, what it resolved, and its configuration) as the options
    that repeat it: the mode and the configuration's values its mode reads. Any other file as it is."""
    if not (isinstance(values.get("config"), dict) and values.get("mode") in MODE_READS and "not_checked" in values):
        return values
    mode = values["mode"]
    return {"mode": mode, **{name: value for name, value in values["config"].items()
                             if name in MODE_READS[mode] and name not in COMMAND_ONLY}}


def _parse_yaml(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise UserError(f"--config {path}: reading YAML needs PyYAML (pip install pyyaml), or give a .json file") \
            from None
    try:
        # Aliases let a few hundred bytes expand to gigabytes; a file of options never needs one.
        if any(isinstance(token, yaml.AliasToken) for token in yaml.scan(text, Loader=yaml.SafeLoader)):
            raise UserError(f"--config {path} uses YAML aliases (*name); write the values out")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"--config {path} is not valid YAML: {' '.join(str(e).split())}") from None
    except (ValueError, RecursionError) as e:
        reason = "nested too deep" if isinstance(e, RecursionError) else str(e).split(";")[0]
        raise UserError(f"--config {path} is not a file of options ({reason})") from None


def option_tokens(values: Mapping[str, Any], source: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """Command-line tokens that set these options (but those in skip), for the parser to check as if
    they were typed."""
    tokens: list[str] = []
    for key, value in values.items():
        if key in skip:
            continue
        if key not in BY_DEST or key in COMMAND_ONLY:
            raise UserError(f"{source}: unknown option {key!r}; valid keys: {', '.join(settable())}")
        try:
            tokens += _tokens(BY_DEST[key], value, source)
        except ValueError:  # str() of an integer of thousands of digits
            raise UserError(f"{source}: {key} holds a number too long to be a value") from None
    return tokens


def _tokens(option: Option, value: Any, source: str) -> list[str]:
    if value is None:
        return []  # the option's default
    if option.kind in ("switch", "no-switch", "boolean"):
        if not isinstance(value, bool):
            raise UserError(f"{source}: {option.dest} takes true or false, got {shown(value)}")
        if option.kind == "switch":
            return [option.flag] if value else []
        if option.kind == "no-switch":
            return [] if value else [option.flag]
        return [option.flag if value else "--no-" + option.flag[2:]]
    if isinstance(value, (dict, bool)) and option.type is not None:
        raise UserError(f"{source}: {option.dest} takes {getattr(option.type, 'what', 'a value')}, got {shown(value)}")
    if option.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        for item in items:
            _check_item(option, item, source)
        return [option.flag, *map(str, items)] if items else []
    if isinstance(value, (list, dict)):
        raise UserError(f"{source}: {option.dest} takes one value, got {shown(value)}")
    return [f"{option.flag}={value}"]  # one token: a value that looks like an option stays a value


def _check_item(option: Option, item: Any, source: str) -> None:
    """One of a list option's values: a number or a name, never something the parser would read as
    another option."""
    if isinstance(item, (list, dict, bool)) or item is None:
        raise UserError(f"{source}: {option.dest} takes a list of values, got {shown(item)} in it")
    if isinstance(item, str) and item.startswith("-"):
        raise UserError(f"{source}: {option.dest} holds {shown(item)}, which is not a value")
