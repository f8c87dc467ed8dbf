"""The optimizer and the learning rate as a function of (epoch, step)."""
from __future__ import annotations

import math

import torch
from torch import nn

from resnet_cifar.config import TrainConfig
from resnet_cifar.optim.muon import MuonSGD


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (or, with --optimizer muon, MuonSGD) over the learned parameters in groups, each with an
    "lr_scale" the step multiplies the schedule's lr by: BatchNorm biases at --bn-bias-lr-scale K
    (weight decay / K, so that their decay a step stays the others'), the whitening bias apart
    (frozen after --whiten-bias-epochs), and under Muon the convolution filters at --muon-lr."""
    muon = config.optimizer == "muon"
    groups = {"other": [], "norm_bias": [], "whiten_bias": [], "muon": []}
    norm_biases = {id(m.bias) for m in model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        # One group unless something differs: a checkpoint's optimizer state keeps its layout.
        kind = ("muon" if muon and parameter.dim() == 4
                else "whiten_bias" if name.endswith("whiten.bias") and config.whiten_bias_epochs is not None
                else "norm_bias" if id(parameter) in norm_biases and config.bn_bias_lr_scale != 1 else "other")
        groups[kind].append(parameter)
    scale, decay = config.bn_bias_lr_scale, config.weight_decay
    settings = {"other": (1.0, decay), "norm_bias": (scale, decay / scale),
                # airbench94_muon trains the whitening bias as a bias; airbench94 as the other weights
                "whiten_bias": (scale, decay / scale) if muon else (1.0, decay),
                "muon": (config.muon_lr / config.lr, 0.0)}
    param_groups = [{"params": params, "lr_scale": settings[kind][0], "weight_decay": settings[kind][1],
                     "kind": kind} for kind, params in groups.items() if params]
    if not muon:
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    for group in param_groups:
        group.update(muon=group["kind"] == "muon",
                     momentum=config.muon_momentum if group["kind"] == "muon" else config.momentum)
    return MuonSGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, whiten_bias_lr: float | None = None) -> None:
    """Each group's lr for this step: the schedule's (whiten_bias_lr for the whitening bias's
    group, LRSchedule.whiten_bias_lr), times the group's scale."""
    for group in optimizer.param_groups:
        own = whiten_bias_lr if group.get("kind") == "whiten_bias" and whiten_bias_lr is not None else lr
        group["lr"] = own * group.get("lr_scale", 1.0)


class LRSchedule:
    """The learning rate as a function of (epoch, step), plus plateau's small state.

    One object for every scheduler, set on the optimizer before each step, so warmup composes
    with all of them and resume needs only `state_dict()` (plateau's best and patience count).
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int):
        self.kind = config.scheduler
        self.base_lr = config.lr
        self.epochs = config.epochs
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = config.iterations or config.epochs * steps_per_epoch
        self.warmup_steps = config.warmup_steps or round(config.warmup_epochs * steps_per_epoch)
        self.warmup_style = config.warmup_style
        self.triangular_start = config.triangular_start
        self.triangular_peak = config.triangular_peak
        self.triangular_end = config.triangular_end
        self.milestones = tuple(config.milestones)
        self.milestone_unit = config.milestone_unit
        self.step_size = config.step_size
        self.gamma = config.gamma
        self.patience = config.plateau_patience
        self.whiten_bias_epochs = config.whiten_bias_epochs
        self.whiten_bias_decays = config.optimizer == "muon"
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0

    def lr(self, epoch: int, step: int) -> float:
        global_step = epoch * self.steps_per_epoch + step
        if self.kind == "onecycle":
            return self._onecycle(global_step)
        if self.kind == "triangular":
            return self._triangular(global_step)
        if self.kind == "plateau":
            lr = self.base_lr * self.plateau_scale
        elif self.kind == "step":
            lr = self.base_lr * self.gamma ** (epoch // self.step_size)
        elif self.kind == "multistep":
            position = global_step if self.milestone_unit == "steps" else epoch
            lr = self.base_lr * self.gamma ** sum(position >= m for m in self.milestones)
        else:  # cosine, over the steps after warmup
            total = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0, global_step - self.warmup_steps) / total)
            lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * progress))
        if global_step < self.warmup_steps:
            # constant: He et al. 2015 warm ResNet-110 up at lr/10 "until the training error is
            # below 80% (about 400 iterations), and then go back to 0.1".
            lr *= 0.1 if self.warmup_style == "constant" else (global_step + 1) / self.warmup_steps
        return lr

    def whiten_bias_lr(self, epoch: int, step: int, lr: float) -> float:
        """The whitening bias's lr: the others' (lr) for its first --whiten-bias-epochs, then 0 (as
        airbench94); under Muon the peak lr falling linearly to 0 over those epochs (as airbench94_muon).
        A function of (epoch, step): nothing to resume."""
        if self.whiten_bias_epochs is None:
            return lr
        if not self.whiten_bias_decays:
            return lr if epoch < self.whiten_bias_epochs else 0.0
        steps = math.ceil(self.whiten_bias_epochs * self.steps_per_epoch)
        return self.base_lr * max(0.0, 1 - (epoch * self.steps_per_epoch + step) / max(1, steps))

    def _triangular(self, global_step: int) -> float:
        # Linear from triangular_start x the peak (0.2; Page's ResNet-9: 0) up to the peak at
        # triangular_peak of the run (0.2; Page's: 5 of 24 epochs) or the end of an explicit warmup,
        # then linear down to triangular_end x the peak at the last step (0, as the fast CIFAR-10
        # routes do; airbench: 0.07). Fractions, so that the shape holds for any --epochs or --time-budget.
        rise = self.warmup_steps if self.warmup_steps > 0 else round(self.triangular_peak * self.total_steps)
        if global_step < rise:
            return self.base_lr * (self.triangular_start + (1 - self.triangular_start) * global_step / rise)
        progress = min(1.0, (global_step - rise) / max(1, self.total_steps - rise))
        return self.base_lr * (1 - (1 - self.triangular_end) * progress)

    def _onecycle(self, global_step: int) -> float:
        # Smith & Topin 2017, as torch's OneCycleLR: cosine up from lr/25, cosine down to lr/25e4.
        total = max(1, self.total_steps)
        rise = self.warmup_steps if self.warmup_steps > 0 else round(0.3 * total)
        low, high, final = self.base_lr / 25, self.base_lr, self.base_lr / 25e4
        if global_step < rise:
            start, end, progress = low, high, global_step / max(1, rise)
        else:
            start, end, progress = high, final, min(1.0, (global_step - rise) / max(1, total - rise))
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))

    def end_epoch(self, monitored_loss: float) -> None:
        """Plateau: divide the lr by 1/gamma after `patience` epochs without a 0.01% improvement."""
        if self.kind != "plateau":
            return
        if monitored_loss < self.plateau_best * (1 - 1e-4):
            self.plateau_best = monitored_loss
            self.plateau_bad_epochs = 0
            return
        self.plateau_bad_epochs += 1
        if self.plateau_bad_epochs > self.patience:
            self.plateau_scale *= self.gamma
            self.plateau_bad_epochs = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad_epochs": self.plateau_bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])
