"""One optimizer step: forward, loss, backward, the optimizer, and what follows each step (the
weights' moving average, lookahead)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from resnet_cifar.optim.schedules import set_lrs
from resnet_cifar.training.assembly import StepContext, unwrap
from resnet_cifar.utils.devices import autocast


def train_step(ctx: StepContext, inputs: torch.Tensor, targets: torch.Tensor, lrs: float | Sequence[float],
               progress: float | None = None):
    """One optimizer step at these lrs (each group's, or one lr times each group's scale) and this
    progress through the run (schedules.set_lrs); returns (summed loss, number correct) as device
    tensors (no sync).

    targets are labels (B,) or, with mixup/CutMix, probabilities (B, classes); then "correct"
    is the weight the target gives the predicted class (lambda or 1 - lambda when the prediction
    is one of the two mixed classes), so train accuracy measures agreement with the mixed target.
    """
    set_lrs(ctx.optimizer, lrs, progress)
    with autocast(ctx.device, ctx.precision):
        logits = ctx.model(inputs)
        loss = ctx.criterion(logits, targets)
    ctx.optimizer.zero_grad(set_to_none=True)
    weight = share_weight(ctx, len(targets))
    ctx.scaler.scale(loss if weight == 1.0 else loss * weight).backward()
    if ctx.clip_grad_norm is not None:
        ctx.scaler.unscale_(ctx.optimizer)
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.clip_grad_norm)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    if ctx.ema is not None:
        ctx.ema.update(unwrap(ctx.model))
    if ctx.lookahead is not None:
        ctx.lookahead.after_step(unwrap(ctx.model))
    predicted = logits.argmax(1)
    if targets.dim() == 2:
        correct = targets.gather(1, predicted[:, None]).sum()
    else:
        correct = (predicted == targets).sum()
    return loss.detach().float() * targets.shape[0], correct


def share_weight(ctx: StepContext, share: int) -> float:
    """What this process's mean loss is weighted by so that the gradient DDP averages over the W
    processes is the gradient of the global batch's mean loss: with shares n_r of a global batch
    B, (1/W) sum_r (W n_r / B) mean_r = (1/B) sum_i loss_i. 1 with equal shares or one process."""
    if not ctx.dist.active or not ctx.global_batch:
        return 1.0
    return share * ctx.dist.world_size / ctx.global_batch
