"""The optimizer's parameter groups, and how each follows the learning-rate schedule: one table,
declared from the configuration, that the optimizer builder and the schedule read. The step and
the schedule know only these rules, not the recipes that chose them."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from resnet_cifar.config import TrainConfig


@dataclass(frozen=True)
class GroupRule:
    """One group's learning rate and weight decay against the schedule's.

    lr_scale multiplies the schedule's lr; frozen_from_epoch: its lr is 0 from that point (in epochs) on;
    falls_over_epochs: its lr is the run's peak falling linearly to 0 over that many epochs, whatever
    the schedule does; orthogonalised: its update is Muon's (optim/muon.py), with its own momentum."""

    lr_scale: float = 1.0
    weight_decay: float = 0.0
    frozen_from_epoch: float | None = None
    falls_over_epochs: float | None = None
    orthogonalised: bool = False
    momentum: float | None = None  # None: the optimizer's

    def lr(self, scheduled: float, peak: float, epoch: int, step: int, steps_per_epoch: int) -> float:
        if self.falls_over_epochs is not None:
            steps = math.ceil(self.falls_over_epochs * steps_per_epoch)
            own = peak * max(0.0, 1 - (epoch * steps_per_epoch + step) / max(1, steps))
        elif (self.frozen_from_epoch is not None
              and epoch * steps_per_epoch + step >= math.ceil(self.frozen_from_epoch * steps_per_epoch)):
            own = 0.0
        else:
            own = scheduled
        return own * self.lr_scale


def group_rules(config: TrainConfig) -> dict[str, GroupRule]:
    """Each kind of parameter's rule for this configuration:
    - other: the schedule's lr and the weight decay;
    - norm_bias (BatchNorm biases): the lr times --bn-bias-lr-scale K and the weight decay / K, so
      their decay a step stays the others' (airbench's 64);
    - whiten_bias (the whitening layer's bias, with --whiten-bias-epochs N): as airbench94, like the
      other weights and frozen after N epochs; under Muon, as airbench94_muon, like a BatchNorm bias
      with its lr falling from the peak to 0 over N epochs;
    - muon (convolution filters under --optimizer muon): --muon-lr, orthogonalised, --muon-weight-decay
      (decoupled: the optimizer multiplies each weight by 1 - lr x decay after the update)."""
    scale, decay, epochs = config.bn_bias_lr_scale, config.weight_decay, config.whiten_bias_epochs
    muon = config.optimizer == "muon"
    return {
        "other": GroupRule(1.0, decay),
        "norm_bias": GroupRule(scale, decay / scale),
        "whiten_bias": (GroupRule(scale, decay / scale, falls_over_epochs=epochs) if muon
                        else GroupRule(1.0, decay, frozen_from_epoch=epochs)),
        "muon": GroupRule(config.muon_lr / config.lr, config.muon_weight_decay, orthogonalised=True,
                          momentum=config.muon_momentum),
    }


def kind_of(name: str, parameter: nn.Parameter, norm_biases: set[int], config: TrainConfig) -> str:
    """Which group a parameter joins. One group unless something differs: a checkpoint's optimizer
    state keeps its layout."""
    if config.optimizer == "muon" and parameter.dim() == 4:
        return "muon"
    if name.endswith("whiten.bias") and config.whiten_bias_epochs is not None:
        return "whiten_bias"
    if id(parameter) in norm_biases and config.bn_bias_lr_scale != 1:
        return "norm_bias"
    return "other"


def parameter_groups(model: nn.Module, config: TrainConfig) -> tuple[list[dict], list[GroupRule]]:
    """The learned parameters in groups (each with its "kind", "lr_scale" and "weight_decay", as
    checkpoints record them) and each group's rule, in the same order."""
    rules = group_rules(config)
    members: dict[str, list[nn.Parameter]] = {kind: [] for kind in rules}
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            members[kind_of(name, parameter, norm_biases, config)].append(parameter)
    kinds = [kind for kind, params in members.items() if params]
    groups = [{"params": members[kind], "lr_scale": rules[kind].lr_scale, "weight_decay": rules[kind].weight_decay,
               "kind": kind} for kind in kinds]
    return groups, [rules[kind] for kind in kinds]
