"""Named training recipes: each is a set of TrainConfig values, resolved before a run starts.

Resolution order: TrainConfig's defaults (which are the `seed` recipe), then the recipe's
values, then every option the user typed. The resolved values, and the recipe's name, are what
config.json and the checkpoint record.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import DROPOUT_MODELS, RESNEXT_MODELS, WIDE_MODELS

PAPER_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")


@dataclass(frozen=True)
class ShortRun:
    """Values a recipe takes instead for runs of at most max_epochs epochs of these models, where
    they were measured to beat its own."""

    max_epochs: float
    values: dict[str, Any]
    models: tuple[str, ...]
    why: str  # what was measured

    def describe(self) -> str:
        values = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in self.values.items())
        return f"{values} for runs of {self.max_epochs:g} epochs or fewer ({self.why})"


@dataclass(frozen=True)
class Recipe:
    summary: str  # one line for --help
    source: str  # where its values come from
    values: dict[str, Any]
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra values for some models
    models: tuple[str, ...] | None = None  # None: any model
    short_run: ShortRun | None = None
    # A length in epochs that is not a whole number (airbench's 9.9): the run's --iterations, set
    # once the data set's size gives the steps an epoch, unless a length was typed.
    length_epochs: float | None = None


def airbench_sgd(lr: float, weight_decay: float, momentum: float) -> dict[str, Any]:
    """airbench94's SGD as its script writes it, in decoupled form: lr and weight decay "per 1024
    examples" on the loss summed over a batch of 1024, Nesterov momentum m. Its SGD steps at
    lr / (1024 (1 + 1 / (1 - m))) on the sum, i.e. lr (1 - m) / (2 - m) on this trainer's mean loss,
    and decays each weight by lr x weight decay a step: the same update here takes that lr and a
    weight decay of weight_decay / lr."""
    # Rounded: 1 - 0.85 is not exact in binary, and airbench's 11.5 is 1.5 on the mean loss.
    mean_lr = round(lr * (1 - momentum) / (2 - momentum), 12)
    return dict(lr=mean_lr, weight_decay=weight_decay / lr, momentum=momentum, nesterov=True)


def airbench_muon_sgd(head_lr: float, bias_lr: float, weight_decay: float, batch_size: int) -> dict[str, Any]:
    """airbench94_muon's SGD groups as its script writes them: the head's lr and the biases' on the loss
    summed over the batch, weight decay x batch / lr each, logits / 256 with the head kept at std 1.
    This net divides its logits by 9 and keeps PyTorch's initialisation (a 2.7% smaller start, the
    same function), so on the mean loss the same updates are the head's lr x batch x (9/256)^2 and
    weight decay / lr x (256/9)^2, and the BatchNorm biases' lr that many times the head's
    (--bn-bias-lr-scale; weight decay divided by it). Muon normalises its update: no scale to map."""
    logit_ratio = (9 / 256) ** 2
    return dict(lr=head_lr * batch_size * logit_ratio, weight_decay=weight_decay / head_lr * (256 / 9) ** 2,
                bn_bias_lr_scale=bias_lr / (head_lr * logit_ratio), batch_size=batch_size)


# airbench94_muon.py's values, in its units, shared by its CPU variant.
AIRBENCH94_MUON: Mapping[str, Any] = MappingProxyType(dict(
    epochs=8, optimizer="muon", muon_lr=0.24, muon_momentum=0.6, momentum=0.85, nesterov=True,
    **airbench_muon_sgd(head_lr=0.67, bias_lr=0.053, weight_decay=2e-6, batch_size=2000),
    label_smoothing=0.2, scheduler="triangular", triangular_peak=0.0, whiten_bias_epochs=3, translate=2,
    translate_pad="reflect", flip="alternating", tta="flip-translate", eval_every=0))

RECIPES: dict[str, Recipe] = {
    "seed": Recipe(
        summary="SGD momentum 0.9, weight decay 1e-4, batch 256, lr 0.1 divided by 10 when the loss plateaus "
                "(validation loss with --val-size, else training loss), 200 epochs, crop + flip",
        source="this trainer's defaults",
        values={},
    ),
    "paper": Recipe(
        summary="He et al. 2015 sec. 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, "
                "weight decay 1e-4, momentum 0.9, crop + flip; resnet110/1202 warm up at lr 0.01 for 400 iterations",
        source="He et al. 2015, sec. 4.2 (ResNet-20: 91.25% on the official data)",
        values=dict(batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=False, scheduler="multistep",
                    milestones=(32_000, 48_000), milestone_unit="steps", gamma=0.1, iterations=64_000),
        per_model={name: dict(warmup_steps=400, warmup_style="constant") for name in ("resnet110", "resnet1202")},
        models=PAPER_MODELS,
    ),
    "standard": Recipe(
        summary="the popular repos' ResNet-18 recipe: 200 epochs, cosine from lr 0.1, weight decay 5e-4, batch 128, "
                "momentum 0.9, crop + flip",
        source="kuangliu/pytorch-cifar and the repositories that follow it",
        values=dict(epochs=200, scheduler="cosine", lr=0.1, weight_decay=5e-4, momentum=0.9, batch_size=128),
    ),
    "fast": Recipe(
        summary="short runs: Nesterov SGD, weight decay 5e-4, batch 500, triangular lr peaking at 0.4 at 20% of "
                "training (0.2 for runs of the 6n+2 nets of 6 epochs or fewer), crop (reflect pad 4) + flip, "
                "Cutout 12 (not for the 6n+2 nets), flip + translate TTA, evaluated after the last epoch only; "
                "26 epochs (resnet18), 30 (others)",
        source="the published fast ResNet-18 route, its ResNet-20 values measured on the JPEG copy (docs/recipes.md)",
        # Evaluated after the last epoch only: flip-translate TTA is 6 passes over the test set, a third
        # of a resnet20 epoch's time on a CPU (bench/README.md). Per-epoch curves need --eval-every 1.
        values=dict(epochs=30, batch_size=500, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="triangular", translate_pad="reflect", cutout=12, tta="flip-translate", eval_every=0),
        # No Cutout for the 6n+2 nets: it cost resnet20 points at short lengths (bench/README.md).
        per_model={"resnet18": dict(epochs=26), **{name: dict(cutout=0) for name in PAPER_MODELS}},
        # The lower peak wins short runs and loses long ones; 6 epochs stays short of where the measured
        # advantage crosses zero (docs/recipes.md, "Peak lr").
        short_run=ShortRun(6, dict(lr=0.2), PAPER_MODELS,
                           why="measured on resnet20: +3.7 points at 3 epochs, +1.2 at 4; 0.4 wins at 9"),
    ),
    "resnet9": Recipe(
        summary="Page's DAWNBench route for ResNet-9: Nesterov SGD (momentum 0.9), weight decay 5e-4, batch 512, "
                "lr linear from 0 to 0.4 at epoch 5, then to 0 at epoch 24 (the same shape for any length), "
                "label smoothing 0.2, crop (reflect "
                "pad 4) + flip + Cutout 8, flip TTA, evaluated after the last epoch only",
        source="David Page, How to train your ResNet, 2018; davidcpage/cifar10-fast (94.08% in 24 epochs on the "
               "official data)",
        # Page sums the loss over the batch and uses lr 0.4 / 512 and weight decay 5e-4 x 512: with
        # this trainer's mean loss the same update is lr 0.4 and weight decay 5e-4.
        values=dict(epochs=24, batch_size=512, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="triangular", triangular_peak=5 / 24, triangular_start=0.0, label_smoothing=0.2,
                    translate_pad="reflect", cutout=8, tta="flip", eval_every=0),
        models=("resnet9",),
    ),
    "airbench94": Recipe(
        summary="Jordan's airbench94 route: batch 1024, Nesterov SGD (momentum 0.85), lr 1.5 and weight decay "
                "0.00133 (airbench's 11.5 and 0.0153 per 1024 examples), BatchNorm biases at 64x the lr, lr from "
                "0.2x to its peak at 23% of the run then down to 0.07x, lookahead, label smoothing 0.2, crop "
                "(reflect pad 2) + alternating flip, whitening bias frozen after 3 epochs, 9.9 epochs, "
                "flip-translate TTA",
        source="Keller Jordan, airbench94 (arXiv 2404.00498; KellerJordan/cifar10-airbench): 94.01% in 9.9 epochs on "
               "the official data",
        values=dict(epochs=10, batch_size=1024, **airbench_sgd(lr=11.5, weight_decay=0.0153, momentum=0.85),
                    bn_bias_lr_scale=64.0, label_smoothing=0.2, scheduler="triangular",
                    triangular_start=0.2, triangular_peak=0.23, triangular_end=0.07, lookahead=True,
                    whiten_bias_epochs=3, translate=2, translate_pad="reflect", flip="alternating",
                    tta="flip-translate", eval_every=0),
        length_epochs=9.9,
    ),
    "airbench94-muon": Recipe(
        summary="Jordan's airbench94_muon route: airbench94's net and augmentation with Muon (lr 0.24, momentum 0.6, "
                "3 Newton-Schulz steps) on the convolution filters and Nesterov SGD (momentum 0.85) on the rest, "
                "batch 2000, lr falling linearly from its peak to 0, no lookahead, label smoothing 0.2, whitening "
                "bias's lr falling to 0 over 3 epochs, 8 epochs, flip-translate TTA",
        source="Keller Jordan, airbench94_muon.py (KellerJordan/cifar10-airbench): 94.01% in 8 epochs on the "
               "official data",
        values=dict(AIRBENCH94_MUON),
    ),
    "airbench94-muon-cpu": Recipe(
        summary="airbench94-muon for a CPU: batch 1024 and the head's lr halved with it (0.848), 7.5 epochs; "
                "measured on 2 CPU cores to reach the published airbench94 script's accuracy in 0.78x its time",
        source="airbench94_muon.py's recipe at the batch that runs fastest on a CPU, measured with this trainer",
        # Batches of 2000 run slower than 1024 on a CPU (the activations outgrow the caches), and twice
        # as many steps an epoch let fewer epochs do as much (docs/results.md). Muon's lr is a step's
        # size and stays 0.24; the SGD groups keep their per-example step at the new batch.
        values={**AIRBENCH94_MUON, **airbench_muon_sgd(head_lr=0.67, bias_lr=0.053, weight_decay=2e-6,
                                                       batch_size=1024)},
        length_epochs=7.5,
    ),
    "wrn": Recipe(
        summary="Zagoruyko & Komodakis 2016 for the wide nets: Nesterov SGD (momentum 0.9), weight decay 5e-4, "
                "batch 128, lr 0.1 multiplied by 0.2 at epochs 60, 120 and 160, 200 epochs, dropout 0.3, "
                "crop (reflect pad 4) + flip",
        source="Zagoruyko & Komodakis 2016 (WRN-28-10: 96.11% on the official data)",
        values=dict(epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="multistep", milestones=(60, 120, 160), gamma=0.2,
                    dropout=0.3, translate_pad="reflect"),
        models=WIDE_MODELS,
    ),
    "resnext": Recipe(
        summary="Xie et al. 2017 for ResNeXt-29, as the authors' code trains it: Nesterov SGD (momentum 0.9), "
                "weight decay 5e-4, batch 128, lr 0.1 divided by 10 at epochs 150 and 225, 300 epochs, crop + flip",
        source="Xie et al. 2017 and facebookresearch/ResNeXt (8x64d: 96.35% on the official data)",
        # facebookresearch/ResNeXt: train.lua (Nesterov; the drops past 49% and 74% of the epochs, the
        # paper's 150 and 225 of 300), opts.lua (300 epochs), the README's CIFAR command (wd 5e-4, batch 128).
        values=dict(epochs=300, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                    scheduler="multistep", milestones=(150, 225), gamma=0.1),
        models=RESNEXT_MODELS,
    ),
}
RECIPE_NAMES = tuple(RECIPES)


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

    A typed --epochs overrides a recipe's --iterations (the two say the same thing); typing both
    is refused, as is --dropout for a model without a place for it.
    """
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
