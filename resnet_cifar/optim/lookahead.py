"""airbench's lookahead (Zhang et al. 2019's idea, with airbench's schedule): every `every` steps a
moving average of the weights moves toward them by 1 - decay, decay = base^every x (t / T)^3, and
the weights are set to it; after the run's last step they are set to it, whatever the step."""
from __future__ import annotations

import torch
from torch import nn

EVERY = 5
BASE = 0.95


class Lookahead:
    def __init__(self, model: nn.Module, total_steps: int, every: int = EVERY, base: float = BASE):
        self.total_steps = total_steps
        self.every = every
        self.base = base
        self.steps = 0  # saved in checkpoints: a resumed run goes on with the same decays
        self.average = {name: value.detach().clone() for name, value in model.state_dict().items()
                        if value.is_floating_point()}

    def decay(self, step: int) -> float:
        """How much of the average a lookahead at `step` keeps (early steps keep little: it follows)."""
        return self.base ** self.every * (step / self.total_steps) ** 3

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        self.steps += 1
        update, last = self.steps % self.every == 0, self.steps >= self.total_steps
        if not (update or last):
            return
        decay = self.decay(self.steps)
        for name, value in model.state_dict().items():
            if name in self.average:
                if update:
                    self.average[name].lerp_(value, 1 - decay)
                value.copy_(self.average[name])

    def state_dict(self) -> dict:
        return {"steps": self.steps, "average": self.average}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        for name, value in state["average"].items():
            self.average[name].copy_(value)
