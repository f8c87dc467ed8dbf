"""An exponential moving average (EMA) of a model's weights, evaluated next to the raw weights."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """ema = d_n * ema + (1 - d_n) * weights after the n-th optimizer step (n from 0), with the
    warm-up of TensorFlow's ExponentialMovingAverage(num_updates=...) and timm's ModelEma:
    d_n = min(decay, (1 + n) / (10 + n)). The first updates follow the weights closely, so a short
    run's average is not dominated by its random start (without it, 0.99 over 300 steps kept ~5% of
    the initial weights and cost 15 points); from n = 9 / (1 - decay) - 10 on, d_n = decay.

    Buffers (BatchNorm's running statistics) are copied, not averaged: they already are running
    averages. (torch.optim.swa_utils.AveragedModel either averages them too, use_buffers=True,
    or leaves them at their initial values.) A plain class also keeps the EMA out of the
    optimizer step's graph and its state a plain state_dict for the checkpoint.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0  # saved in checkpoints: a resumed run goes on with the same d_n
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self._params = list(self.module.parameters())
        self._buffers = list(self.module.buffers())

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        # lerp(ema, w, 1 - d) = ema + (1 - d) (w - ema) = d ema + (1 - d) w
        torch._foreach_lerp_(self._params, list(model.parameters()), 1.0 - self.current_decay())
        self.updates += 1
        for mine, theirs in zip(self._buffers, model.buffers(), strict=True):
            mine.copy_(theirs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
