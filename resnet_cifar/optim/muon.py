"""Muon for convolution filters and SGD for the other parameters, in one optimizer.

Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon; airbench94_muon.py in
KellerJordan/cifar10-airbench): the filter bank's (Nesterov) momentum, flattened to a matrix of
one row a filter, is replaced by an approximately orthogonal matrix of the same singular vectors
(three steps of a quintic Newton-Schulz iteration in bfloat16), and the weights are renormalised
to a Frobenius norm of sqrt(filters) before each step; there is no weight decay. A BatchNorm
after each convolution makes its scale irrelevant.

The record script (hiverge/cifar10-speedrun) changes three things, each a group setting here:
the quintic's coefficients ("ns_coefficients"), renormalising only every `renorm_every +
int(renorm_growth x progress)` steps, and a decoupled weight decay (each weight times 1 - lr x
weight_decay after the update). Its batched call orthogonalises the six filter banks padded to
one shape: the same arithmetic in fewer GPU launches, which on a CPU would pad three of them
to 4-40x their size, so each is orthogonalised on its own here.

torch.optim.Muon (torch >= 2.9) takes 2-D weights only and applies decoupled weight decay and a
shape-dependent lr; this is the published update for 4-D filters, on any supported torch. One
optimizer rather than two, so that GradScaler, checkpoints and the lr schedule see one object:
groups with "muon": True take the Muon update, the others exactly torch.optim.SGD's (momentum,
dampening 0, weight decay added to the gradient, Nesterov).
"""
from __future__ import annotations

import torch

# The quintic's coefficients: Muon's, chosen for the slope at zero; the record script's, retuned.
NS_COEFFICIENTS = {"muon": (3.4445, -4.7750, 2.0315), "speedrun": (3.4576, -4.7391, 2.0843)}
NS_STEPS = 3  # airbench94_muon's; 5 in Muon's general form
NS_EPS = 1e-7


def orthogonalize(update: torch.Tensor, steps: int = NS_STEPS,
                  coefficients: tuple[float, float, float] = NS_COEFFICIENTS["muon"]) -> torch.Tensor:
    """update (out, ...) flattened to (out, rest) with its singular values pushed toward 1 (not all
    the way: the iteration is tuned for speed, not convergence), in bfloat16, in update's shape."""
    a, b, c = coefficients
    matrix = update.reshape(len(update), -1)
    x = matrix.bfloat16()
    x = x / (x.norm() + NS_EPS)  # every singular value <= 1
    wide = matrix.size(0) <= matrix.size(1)
    if not wide:
        x = x.T  # iterate on the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if not wide:
        x = x.T
    return x.reshape(update.shape)


class MuonSGD(torch.optim.Optimizer):
    """param_groups as torch.optim.SGD takes them, each optionally with "muon": True and its own
    "momentum". A Muon group's weight decay is decoupled; its "ns_coefficients", "renorm_every" and
    "renorm_growth" default to airbench94_muon's (Muon's coefficients, every step). Its progress
    through the run (0 to 1) is set before each step, like its lr (schedules.set_lrs); the steps
    taken and the last renormalised one are counted in the group, so checkpoints keep them."""

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs a momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                                      muon=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            renorm = self._renorm_due(group) if group["muon"] else False
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group, renorm)
        return loss

    def _update(self, param: torch.Tensor, group: dict, renorm: bool) -> None:
        grad, momentum = param.grad, group["momentum"]
        if group["weight_decay"] and not group["muon"]:
            grad = grad.add(param, alpha=group["weight_decay"])
        if momentum:
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.clone(grad).detach()
            else:
                state["momentum_buffer"].mul_(momentum).add_(grad)
            buffer = state["momentum_buffer"]
            grad = grad.add(buffer, alpha=momentum) if group["nesterov"] else buffer
        if not group["muon"]:
            param.add_(grad, alpha=-group["lr"])
            return
        if renorm:
            param.mul_(len(param) ** 0.5 / param.norm())
        coefficients = NS_COEFFICIENTS[group.get("ns_coefficients", "muon")]
        param.add_(orthogonalize(grad, coefficients=coefficients), alpha=-group["lr"])
        if group["weight_decay"]:
            param.mul_(1 - group["lr"] * group["weight_decay"])

    @staticmethod
    def _renorm_due(group: dict) -> bool:
        """Count the group's step; whether its filters are renormalised at it: every renorm_every +
        int(growth x progress) steps, counted from the last time (the record script's rule; every step
        by default). The last renormalised step equals the step count exactly when it is due."""
        group["muon_steps"] = group.get("muon_steps", 0) + 1
        period = group.get("renorm_every", 1) + int(group.get("renorm_growth", 0.0) * group.get("progress", 0.0))
        due = group["muon_steps"] - group.setdefault("renorm_last", 0) >= period
        if due:
            group["renorm_last"] = group["muon_steps"]
        return due
