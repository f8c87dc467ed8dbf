"""The form of a named recipe, and airbench's units mapped to this trainer's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    model: str | None = None  # the model trained when --model is not typed (None: TrainConfig's)
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
