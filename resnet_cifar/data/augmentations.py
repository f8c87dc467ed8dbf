"""Training-time augmentation on whole batches, and test-time augmentation (TTA) of logits.

Every random choice is drawn up front, per epoch, from the loader's generator seeded with
(seed, epoch) (see loader.BatchLoader.plan), so a run resumed at any step replays exactly the
images the uninterrupted run saw. The functions here only apply choices they are given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PAD_MODES = ("zeros", "reflect")
POLICIES = ("none", "autoaugment", "randaugment", "trivialaugment")
TTA_MODES = ("none", "flip", "flip-translate", "selective")


@dataclass(frozen=True)
class Augmentation:
    """What training does to each image; the defaults are the classic crop (zero pad 4) + flip."""

    crop_padding: int = 4
    pad_mode: str = "zeros"
    flip: str = "random"  # or "alternating": a random half first, then every image's flip inverted each epoch
    cutout: int = 0  # side of the zeroed square in pixels; 0: off
    cutout_inside: bool = False  # the square wholly inside the image (airbench96), not centred anywhere
    policy: str = "none"  # a torchvision.transforms.v2 policy applied per uint8 image, after crop/flip
    mixup: float = 0.0  # Beta(alpha, alpha) for mixup's lambda; 0: off
    cutmix: float = 0.0  # Beta(alpha, alpha) for CutMix's lambda; 0: off
    brightness: float = 0.0  # each image's normalised values plus a uniform draw from [-b, b]; 0: off
    contrast: float = 0.0  # then times a uniform draw from [1 - c, 1 + c]; 0: off

    @property
    def jitters(self) -> bool:
        return self.brightness > 0 or self.contrast > 0

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclass(frozen=True)
class MixPlan:
    """One epoch's batch mixing: per step a lambda and, for CutMix, the pasted box."""

    lams: np.ndarray  # (steps,) lambda drawn from Beta(alpha, alpha)
    cutmix: np.ndarray  # (steps,) bool: CutMix at this step, else mixup
    boxes: np.ndarray  # (steps, 4) int top, bottom, left, right of CutMix's box


# ---------------------------------------------------------------------------------------------
# Per-image choices applied to a chunk of images at once


def random_crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int = 4,
                     pad_mode: str = "zeros") -> torch.Tensor:
    """Pad by `padding`, crop HxW at per-sample offsets and flip where flips is true.

    images: (B, C, H, W) uint8; offsets: (B, 2) int64 in [0, 2 * padding]; flips: (B,) bool.
    pad_mode "zeros" pads with black, "reflect" mirrors the image at its border (as F.pad's
    reflect mode, which has no uint8 kernel: here it is an index computation, for any dtype).
    """
    batch, _, height, width = images.shape
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
    if pad_mode == "zeros":
        source = F.pad(images, (padding,) * 4)  # (B, C, H + 2p, W + 2p)
    else:
        source = images
        rows = _reflect(rows - padding, height)
        cols = _reflect(cols - padding, width)
    # A flip is a crop whose columns run backwards, so both happen in one gather.
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    index = torch.arange(batch, device=images.device)
    crops = source[index[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return crops.permute(0, 3, 1, 2)  # (B, C, H, W), channels_last strides


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices back inside [0, size) without repeating the edge pixel."""
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def cutout(images: torch.Tensor, centres: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a size x size square centred at each image's (row, col), clipped at the border.

    DeVries & Taylor 2017 apply it after normalisation, so the square is the data set's mean
    colour; as in their code, the centre may lie anywhere, so part of the square can fall outside.
    images: (B, C, H, W) float; centres: (B, 2) int64 in [0, H) x [0, W).
    """
    _, _, height, width = images.shape
    top = centres[:, 0, None] - size // 2  # (B, 1)
    left = centres[:, 1, None] - size // 2
    ys = torch.arange(height, device=images.device)
    xs = torch.arange(width, device=images.device)
    in_rows = (ys >= top) & (ys < top + size)  # (B, H)
    in_cols = (xs >= left) & (xs < left + size)  # (B, W)
    square = in_rows[:, None, :, None] & in_cols[:, None, None, :]  # (B, 1, H, W)
    return images.masked_fill(square, 0.0)


def colour_jitter(images: torch.Tensor, shifts: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(images + shift) x scale per image, on normalised images, as the record script
    (hiverge/cifar10-speedrun) jitters brightness and contrast: the scale is about 0, the data
    set's mean colour, not about each image's own mean. shifts, scales: (B,)."""
    return (images + shifts.view(-1, 1, 1, 1)) * scales.view(-1, 1, 1, 1)


def policy_transform(name: str) -> nn.Module:
    """torchvision's policy for `name` (AutoAugment with its CIFAR-10 policy)."""
    from torchvision.transforms import v2

    if name == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    if name == "randaugment":
        return v2.RandAugment()
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    raise ValueError(f"unknown augmentation policy {name!r}; choose one of: {', '.join(POLICIES[1:])}")


def apply_policy(transform: nn.Module, images: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Run a torchvision policy on each uint8 image with its own seed.

    torchvision draws the policy's choices from torch's global RNG; seeding it per image (inside
    fork_rng, so the caller's RNG is untouched) makes each image's choice a function of its
    position in the epoch, whatever the chunking and wherever a resume starts.
    """
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    with torch.random.fork_rng(devices=[]):
        for i, seed in enumerate(seeds.tolist()):
            torch.manual_seed(seed)
            out[i] = transform(images[i])
    return out


# ---------------------------------------------------------------------------------------------
# Batch mixing (mixup, CutMix): inputs and soft targets


def draw_mix_plan(rng: np.random.Generator, steps: int, augmentation: Augmentation, height: int,
                  width: int) -> MixPlan:
    """Per step: mixup or CutMix (an even choice when both are on), lambda, and CutMix's box."""
    if augmentation.mixup > 0 and augmentation.cutmix > 0:
        use_cutmix = rng.random(steps) < 0.5
    else:
        use_cutmix = np.full(steps, augmentation.cutmix > 0)
    lams = np.ones(steps)
    for alpha, chosen in ((augmentation.mixup, ~use_cutmix), (augmentation.cutmix, use_cutmix)):
        if alpha > 0:
            lams = np.where(chosen, rng.beta(alpha, alpha, steps), lams)
    # CutMix (Yun et al. 2019): a box of area (1 - lambda) centred anywhere, clipped at the border.
    ratio = np.sqrt(1.0 - lams)
    cut_h, cut_w = (height * ratio).astype(np.int64), (width * ratio).astype(np.int64)
    cy, cx = rng.integers(0, height, steps), rng.integers(0, width, steps)
    boxes = np.stack([np.clip(cy - cut_h // 2, 0, height), np.clip(cy + cut_h // 2, 0, height),
                      np.clip(cx - cut_w // 2, 0, width), np.clip(cx + cut_w // 2, 0, width)], axis=1)
    return MixPlan(lams=lams, cutmix=use_cutmix, boxes=boxes)


def mix_batch(inputs: torch.Tensor, labels: torch.Tensor, plan: MixPlan, step: int, num_classes: int,
              partner: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mix each image with its neighbour in the (already shuffled) batch, as torchvision's v2
    MixUp/CutMix do; returns (inputs, soft targets (B, num_classes), the lambda used).

    partner: (images, labels) to mix with, when the batch is one process's share of a larger one;
    default: the batch rolled by one. For CutMix the returned lambda is the share of the image
    that was *not* pasted over, so the targets weigh each class by the area it covers.
    """
    partner_inputs, partner_labels = partner if partner is not None else (inputs.roll(1, 0), labels.roll(1, 0))
    lam = float(plan.lams[step])
    if plan.cutmix[step]:
        top, bottom, left, right = (int(v) for v in plan.boxes[step])
        inputs = inputs.clone()
        inputs[:, :, top:bottom, left:right] = partner_inputs[:, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (inputs.shape[2] * inputs.shape[3])
    else:
        inputs = inputs * lam + partner_inputs * (1.0 - lam)
    targets = (F.one_hot(labels, num_classes).float() * lam
               + F.one_hot(partner_labels, num_classes).float() * (1.0 - lam))
    return inputs, targets, lam


# ---------------------------------------------------------------------------------------------
# Test-time augmentation


def tta_logits(model: nn.Module, inputs: torch.Tensor, mode: str, fraction: float = 0.25) -> torch.Tensor:
    """Logits averaged over the views `mode` names.

    flip: the image and its mirror. flip-translate: as airbench's strongest level, half weight
    on the flip pair of the image, a quarter each on the flip pairs of the image shifted by one
    pixel up-left and down-right (reflect padding). selective: as the record script
    (hiverge/cifar10-speedrun), one plain pass, then for the `fraction` of the images whose top
    softmax probability is lowest the mean of the same six views, equally weighted (six_views); on
    one batch here, ranked within it: evaluation.evaluate ranks the whole split, as the script does.
    """
    if mode == "none":
        return model(inputs)
    if mode == "flip":
        return _flip_pair(model, inputs)
    if mode == "flip-translate":
        up_left, down_right = _shifted(inputs)
        return (0.5 * _flip_pair(model, inputs) + 0.25 * _flip_pair(model, up_left)
                + 0.25 * _flip_pair(model, down_right))
    if mode == "selective":
        logits = model(inputs)
        chosen = logits.float().softmax(1).amax(1).topk(int(len(inputs) * fraction), largest=False).indices
        return looked_again(model, inputs, logits, chosen)
    raise ValueError(f"unknown TTA {mode!r}; choose one of: {', '.join(TTA_MODES)}")


def looked_again(model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """logits with the rows `chosen` (indices) replaced by those images' six_views."""
    if len(chosen) == 0:
        return logits
    logits = logits.clone()
    logits[chosen] = six_views(model, inputs[chosen]).to(logits.dtype)
    return logits


def six_views(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """The mean of the logits of the image, its one-pixel shifts up-left and down-right, and the
    three mirrored, equally weighted (the record script's selective views)."""
    return sum(_flip_pair(model, view) for view in (inputs, *_shifted(inputs))) / 3


def _shifted(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images shifted by one pixel up-left and down-right (reflect padding)."""
    padded = F.pad(inputs, (1, 1, 1, 1), mode="reflect")
    height, width = inputs.shape[2], inputs.shape[3]
    return padded[:, :, 0:height, 0:width], padded[:, :, 2:height + 2, 2:width + 2]


def _flip_pair(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    # Two passes of the loader's batch, not one of twice the batch: on the CPU a resnet20 forward
    # of 1,000 images ran at about half the img/s of 250 (bench/README.md), and a GPU is already
    # busy at the evaluation batch.
    return 0.5 * (model(inputs) + model(inputs.flip(3)))
