"""A recipe applied to a configuration: its values, its short-run rule and its length."""
from __future__ import annotations

import math
import textwrap
from dataclasses import replace
from typing import Any

from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import AIRBENCH_MODELS, DROPOUT_MODELS
from resnet_cifar.recipes.table import RECIPES


def recipe_values(name: str, model: str) -> dict[str, Any]:
    """The values `name` sets for `model` (the fields it leaves alone keep TrainConfig's defaults)."""
    recipe = RECIPES[name]
    if recipe.models is not None and model not in recipe.models:
        any_model = [other for other, r in RECIPES.items() if r.models is None]
        raise UserError(f"--recipe {name} is for {', '.join(recipe.models)}; got --model {model} "
                        f"(--recipe {', '.join(any_model[:-1])} and {any_model[-1]} take any model)")
    return {**recipe.values, **recipe.per_model.get(model, {})}


def apply_recipe(config: TrainConfig, explicit: set[str]) -> TrainConfig:
    """config with its recipe's values, except where the user typed the option.

    A recipe with a model of its own trains it unless --model is typed. A typed --epochs overrides a
    recipe's --iterations (the two say the same thing); typing both is refused, as are --dropout and
    --activation for a model without a place for them.
    """
    own_model = RECIPES[config.recipe].model
    if own_model is not None and "model" not in explicit:
        config = replace(config, model=own_model)
    if {"epochs", "iterations"} <= explicit:
        raise UserError("--epochs and --iterations both set the run's length; give one of them")
    if config.time_budget is not None and explicit & {"epochs", "iterations"}:
        typed = "--epochs" if "epochs" in explicit else "--iterations"
        raise UserError(f"--time-budget and {typed} both set the run's length; give one of them")
    values = {k: v for k, v in recipe_values(config.recipe, config.model).items() if k not in explicit}
    if "epochs" in explicit:
        values["iterations"] = None
    if config.time_budget is not None:
        # The budget decides the length: the steps are measured at the start (time_budget.py).
        values.pop("epochs", None)
        values["iterations"] = None
    resolved = replace(config, **values)
    if resolved.activation is not None and resolved.model not in AIRBENCH_MODELS:
        raise UserError(f"--activation is for the airbench nets ({', '.join(AIRBENCH_MODELS)}); got --model "
                        f"{resolved.model}" + (f" (--recipe {resolved.recipe} sets it)" if "activation" not in explicit
                                               else ""))
    if resolved.dropout and resolved.model not in DROPOUT_MODELS:
        raise UserError(f"--dropout is for the nets of pre-activation basic blocks ({', '.join(DROPOUT_MODELS)}); "
                        f"got --model {resolved.model}")
    return resolved


def run_epochs(config: TrainConfig, steps_per_epoch: int | None) -> float | None:
    """The run's length in epochs; None while it is unknown (a --time-budget not yet measured, or
    --iterations before the data set's size is known)."""
    if config.iterations is not None:
        return None if steps_per_epoch is None else config.iterations / steps_per_epoch
    return None if config.time_budget is not None else float(config.epochs)


def apply_short_run(config: TrainConfig, explicit: set[str], steps_per_epoch: int | None) -> tuple[TrainConfig, str]:
    """config with its recipe's short-run values when the run is that short, the model is one of
    the rule's and the user typed none of its options; and the line saying what was taken, or
    that it is decided once the length is known ("" when the rule does not apply). Only for a new
    run: a resumed one keeps its recorded values."""
    rule = RECIPES[config.recipe].short_run
    if rule is None or config.model not in rule.models or explicit & set(rule.values):
        return config, ""
    epochs = run_epochs(config, steps_per_epoch)
    if epochs is None:
        return config, f"{rule.describe()}: decided when the run's length is known"
    if epochs > rule.max_epochs:
        return config, ""
    return replace(config, **rule.values), f"a {epochs:.3g}-epoch run: {rule.describe()}"


def apply_length(config: TrainConfig, explicit: set[str], steps_per_epoch: int | None) -> tuple[TrainConfig, str]:
    """config with the recipe's fractional length as --iterations, once the steps an epoch are known,
    unless a length was typed or a --time-budget decides it; and a line saying so ("" when not)."""
    length = RECIPES[config.recipe].length_epochs
    if length is None or explicit & {"epochs", "iterations", "time_budget"} or config.iterations is not None:
        return config, ""
    if steps_per_epoch is None:
        return config, f"{length:g} epochs: the steps decided when the data set's size is known"
    steps = math.ceil(length * steps_per_epoch)
    return replace(config, iterations=steps), f"{length:g} epochs: {steps} steps of {steps_per_epoch} an epoch"


def describe_recipe(name: str) -> str:
    """The run's line naming its recipe and where the recipe's values come from."""
    return f"recipe {name} ({RECIPES[name].source}); options typed on the command line override its values"


def describe_recipes() -> str:
    """The --help epilog: what each recipe sets, one paragraph a recipe."""
    width, column = 78, max(map(len, RECIPES)) + 1
    lines = ["recipes (--recipe NAME; an option typed on the command line overrides its value):"]
    for name, recipe in RECIPES.items():
        lines.extend(textwrap.wrap(recipe.summary, width, initial_indent=f"  {name:<{column}s}",
                                   subsequent_indent=" " * (column + 2)))
    return "\n".join(lines)
