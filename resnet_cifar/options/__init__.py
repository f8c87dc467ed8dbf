"""Every command-line option, declared once (options/general.py, options/training.py, in the form
of options/form.py).

cli/main.py builds its parser from OPTIONS; the mode checks (MODE_READS), the resume rules
(RESUME_OVERRIDABLE, PER_INVOCATION), the summary's grouping of runs by experiment
(NOT_THE_EXPERIMENT) and docs/options.md (`python -m resnet_cifar.cli.options_page > docs/options.md`) are derived
from the same list. A training option's default is its TrainConfig field's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from resnet_cifar.options.form import (
    ALLOWED,
    GROUPS,
    INVOCATION,
    MODES,
    REFUSED,
    RESUME_RULES,
    Option,
)
from resnet_cifar.options.general import GENERAL, MACHINE
from resnet_cifar.options.training import AUGMENTATION, OPTIMISATION

__all__ = ["ALLOWED", "BY_DEST", "GROUPS", "INVOCATION", "MODES", "MODE_READS", "NOT_THE_EXPERIMENT", "OPTIONS",
           "PER_INVOCATION", "RECORDED", "REFUSED", "RESUME_OVERRIDABLE", "RESUME_RULES", "TRAIN_OPTIONS", "Option",
           "config_value"]

OPTIONS: tuple[Option, ...] = GENERAL + OPTIMISATION + AUGMENTATION + MACHINE
BY_DEST = {option.dest: option for option in OPTIONS}

# config.json records these beside the training options: what the run resolved on its machine.
# Only the precision and layout it trained in can change its numbers.
RECORDED = {"resolved_device": False, "resolved_precision": True, "resolved_channels_last": True,
            "auto_precision_img_per_s": False, "world_size": False, "elastic_run_id": False, "resumed_from": False}

MODE_READS: dict[str, frozenset[str]] = {
    mode: frozenset(o.dest for o in OPTIONS if mode in o.modes) for mode in MODES
}
TRAIN_OPTIONS = tuple(o for o in OPTIONS if o.in_train_config)
RESUME_OVERRIDABLE = frozenset(o.dest for o in TRAIN_OPTIONS if o.resume in (ALLOWED, INVOCATION))
PER_INVOCATION = frozenset(o.dest for o in TRAIN_OPTIONS if o.resume == INVOCATION)
NOT_THE_EXPERIMENT = frozenset({o.dest for o in TRAIN_OPTIONS if not o.experiment}
                               | {key for key, counts in RECORDED.items() if not counts})


def config_value(option: Option, value: Any) -> Any:
    """The TrainConfig value of a parsed option."""
    if option.dest == "data_dir":
        return str(Path(value).absolute())  # so that eval from another folder finds the data through the checkpoint
    if isinstance(value, list):
        return tuple(value)
    return value
