"""Named training recipes (table.py, in the form of form.py; apply.py applies them): each is a set
of TrainConfig values, resolved before a run starts.

Resolution order: TrainConfig's defaults (which are the `seed` recipe), then the recipe's
values, then every option the user typed. The resolved values, and the recipe's name, are what
config.json and the checkpoint record.
"""
from __future__ import annotations

from resnet_cifar.recipes.apply import (
    apply_length,
    apply_recipe,
    apply_short_run,
    describe_recipe,
    describe_recipes,
    recipe_values,
    run_epochs,
)
from resnet_cifar.recipes.form import Recipe, ShortRun, airbench_muon_sgd, airbench_sgd
from resnet_cifar.recipes.table import PAPER_MODELS, RECIPE_NAMES, RECIPES

__all__ = ["PAPER_MODELS", "RECIPES", "RECIPE_NAMES", "Recipe", "ShortRun", "airbench_muon_sgd", "airbench_sgd",
           "apply_length", "apply_recipe", "apply_short_run", "describe_recipe", "describe_recipes", "recipe_values",
           "run_epochs"]
