"""The optimizer, and the learning rate as a function of (epoch, step) for each of its groups."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from resnet_cifar.config import LENGTH_SHAPED_SCHEDULERS, TrainConfig
from resnet_cifar.optim.groups import GroupRule, parameter_groups
from resnet_cifar.optim.muon import MuonSGD


def build_optimizer(model: nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, list[GroupRule]]:
    """SGD (or, with --optimizer muon, MuonSGD) over the learned parameters in the groups of
    optim/groups.py, and each group's rule (the schedule applies them)."""
    groups, rules = parameter_groups(model, config)
    if config.optimizer != "muon":
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
        return optimizer, rules
    for group, rule in zip(groups, rules, strict=True):
        group.update(muon=rule.orthogonalised,
                     momentum=rule.momentum if rule.momentum is not None else config.momentum)
        if rule.orthogonalised:
            group.update(ns_coefficients=config.muon_coefficients, renorm_every=config.muon_renorm_every,
                         renorm_growth=config.muon_renorm_growth)
    return MuonSGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov), rules


def set_lrs(optimizer: torch.optim.Optimizer, lrs: float | Sequence[float], progress: float | None = None) -> None:
    """Each group's lr for this step: its own (LRSchedule.group_lrs), or one lr times each group's
    scale; and where given, how far through the run this step is (LRSchedule.progress: Muon's
    renormalisation period grows with it)."""
    if isinstance(lrs, (int, float)):
        lrs = [lrs * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
        if progress is not None:
            group["progress"] = progress


class LRSchedule:
    """The learning rate as a function of (epoch, step), plus plateau's small state.

    One object for every scheduler, set on the optimizer before each step, so warmup composes
    with all of them and resume needs only `state_dict()` (plateau's best and patience count).
    """

    def __init__(self, config: TrainConfig, steps_per_epoch: int, rules: Sequence[GroupRule] = (GroupRule(),)):
        self.rules = tuple(rules)  # the optimizer's groups', in its order
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
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0
        # A length-shaped schedule laid again over a new length mid-run (replan): from step `from_step`
        # on, a step g stands at position from_position + (g - from_step) x slope of the shape, whose
        # own length stays shape_steps. None: never replanned, a step is its own position.
        self.shape_steps = self.total_steps
        self.warp: tuple[int, float, float] | None = None

    def replan(self, done_steps: int, total_steps: int) -> None:
        """Lay the rest of the shape over total_steps - done_steps steps (a --time-budget run that fell
        behind or ahead of its plan): the lr goes on from where it stands, without a jump, and ends
        where the shape ends. Saved in state_dict, so a resume goes on with the same lrs."""
        position = self.position(done_steps)
        # The new last step stands where the shape's last step stands.
        slope = (self.shape_steps - 1 - position) / max(1, total_steps - 1 - done_steps)
        self.warp = (done_steps, position, slope)
        self.total_steps = total_steps

    def position(self, global_step: int) -> float:
        """Where global_step stands on the schedule's shape (itself, unless replanned)."""
        if self.warp is None or global_step < self.warp[0]:
            return global_step
        from_step, from_position, slope = self.warp
        return from_position + (global_step - from_step) * slope

    def lr(self, epoch: int, step: int) -> float:
        global_step = epoch * self.steps_per_epoch + step
        if self.kind in LENGTH_SHAPED_SCHEDULERS:
            global_step = self.position(global_step)
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
            total = max(1, self.shape_steps - self.warmup_steps)
            progress = min(1.0, max(0, global_step - self.warmup_steps) / total)
            lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * progress))
        if global_step < self.warmup_steps:
            # constant: He et al. 2015 warm ResNet-110 up at lr/10 "until the training error is
            # below 80% (about 400 iterations), and then go back to 0.1".
            lr *= 0.1 if self.warmup_style == "constant" else (global_step + 1) / self.warmup_steps
        return lr

    def progress(self, epoch: int, step: int) -> float:
        """How far through the run the step (epoch, step) ends: 1 / total for the first, 1 for the last."""
        return (epoch * self.steps_per_epoch + step + 1) / max(1, self.total_steps)

    def group_lrs(self, epoch: int, step: int) -> list[float]:
        """Each optimizer group's lr for this step: the schedule's, through the group's rule."""
        lr = self.lr(epoch, step)
        return [rule.lr(lr, self.base_lr, epoch, step, self.steps_per_epoch) for rule in self.rules]

    def _triangular(self, global_step: float) -> float:
        # Linear from triangular_start x the peak (0.2; Page's ResNet-9: 0) up to the peak at
        # triangular_peak of the run (0.2; Page's: 5 of 24 epochs) or the end of an explicit warmup,
        # then linear down to triangular_end x the peak at the last step (0, as the fast CIFAR-10
        # routes do; airbench: 0.07). Fractions, so that the shape holds for any --epochs or --time-budget.
        rise = self.warmup_steps if self.warmup_steps > 0 else round(self.triangular_peak * self.shape_steps)
        if global_step < rise:
            return self.base_lr * (self.triangular_start + (1 - self.triangular_start) * global_step / rise)
        progress = min(1.0, (global_step - rise) / max(1, self.shape_steps - rise))
        return self.base_lr * (1 - (1 - self.triangular_end) * progress)

    def _onecycle(self, global_step: float) -> float:
        # Smith & Topin 2017, as torch's OneCycleLR: cosine up from lr/25, cosine down to lr/25e4.
        total = max(1, self.shape_steps)
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
            "shape_steps": self.shape_steps,
            "warp": list(self.warp) if self.warp is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])
        if state.get("warp") is not None:  # checkpoints of runs never replanned have none
            from_step, from_position, slope = state["warp"]
            self.warp = (int(from_step), float(from_position), float(slope))
            self.shape_steps = int(state["shape_steps"])
