"""Muon for convolution filters and SGD for the other parameters, in one optimizer.

Muon (Jordan et al. 2024, kellerjordan.github.io/posts/muon; airbench94_muon.py in
KellerJordan/cifar10-airbench): the filter bank's (Nesterov) momentum, flattened to a matrix of
one row a filter, is replaced by an approximately orthogonal matrix of the same singular vectors
(three steps of a quintic Newton-Schulz iteration in bfloat16), and the weights are renormalised
to a Frobenius norm of sqrt(filters) before each step; there is no weight decay. A BatchNorm
after each convolution makes its scale irrelevant.

torch.optim.Muon (torch >= 2.9) takes 2-D weights only and applies decoupled weight decay and a
shape-dependent lr; this is the published update for 4-D filters, on any supported torch. One
optimizer rather than two, so that GradScaler, checkpoints and the lr schedule see one object:
groups with "muon": True take the Muon update, the others exactly torch.optim.SGD's (momentum,
dampening 0, weight decay added to the gradient, Nesterov).
"""
from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # the quintic's coefficients, chosen for the slope at zero
NS_STEPS = 3  # airbench94_muon's; 5 in Muon's general form
NS_EPS = 1e-7


def orthogonalize(update: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """update (out, ...) flattened to (out, rest) with its singular values pushed toward 1 (not all
    the way: the iteration is tuned for speed, not convergence), in bfloat16, in update's shape."""
    a, b, c = NS_COEFFICIENTS
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
    """param_groups as torch.optim.SGD takes them, each optionally with "muon": True (no weight
    decay there) and its own "momentum"."""

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
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
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
        if group["muon"]:
            param.mul_(len(param) ** 0.5 / param.norm())
            grad = orthogonalize(grad)
        param.add_(grad, alpha=-group["lr"])
