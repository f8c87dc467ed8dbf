"""Batches from a split held on the training device, with each epoch's seeded augmentation plan.

Random crop and flip (and the optional augmentations) are drawn per sample but applied to a whole
chunk of images at once, as the speed-run trainers (airbench, hlb-CIFAR10) do: no per-image PIL
work and no worker processes in the loop.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from resnet_cifar.data.augmentations import (
    Augmentation,
    MixPlan,
    apply_policy,
    colour_jitter,
    cutout,
    draw_mix_plan,
    mix_batch,
    policy_transform,
    random_crop_flip,
)
from resnet_cifar.data.datasets import Split
from resnet_cifar.errors import UserError
from resnet_cifar.utils.distributed import shard_bounds

CHUNK_IMAGES = 2048  # images prepared at once: 25 MB as float32 on the device


class Normalizer:
    """uint8 images to float32, scaled by the per-channel mean and std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t

    def __call__(self, images: torch.Tensor, channels_last: bool) -> torch.Tensor:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return (images.float() * self.scale - self.shift).contiguous(memory_format=layout)


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one training epoch, drawn at once from the loader's generator."""

    order: torch.Tensor  # (N,) permutation
    offsets: torch.Tensor  # (N, 2) crop offsets
    flips: torch.Tensor  # (N,) bool
    cutout_centres: torch.Tensor | None = None  # (N, 2) with --cutout
    policy_seeds: torch.Tensor | None = None  # (N,) one seed per image position with --augment
    mix: MixPlan | None = None  # per step, with --mixup / --cutmix
    jitter: torch.Tensor | None = None  # (N, 2) brightness shift and contrast scale, with --brightness/--contrast


def check_global_batch(batch_size: int, world_size: int) -> None:
    """Refuse a training batch that cannot give every process at least one image."""
    if batch_size < world_size:
        raise UserError(f"--batch-size {batch_size} is the global batch and must hold at least one image for "
                        f"each of the {world_size} processes; give a batch of {world_size} or more, or start "
                        f"fewer processes")


class BatchLoader:
    """Batches from a Split held on the training device.

    For training, each epoch's order, crops and flips come from a generator seeded with
    (seed, epoch): the loader needs no state beyond its seed, and a run resumed at any step
    of any epoch replays exactly the batches the uninterrupted run would have seen.
    The last incomplete batch is dropped in training so every step has the same shape
    (cudnn autotuning and torch.compile see one shape); evaluation keeps every image.

    Under torchrun every rank draws the same plan and takes its own contiguous slice of each global
    batch of batch_size images (distributed.shard_bounds: the slices differ by at most one image),
    so the ranks' batches at a step together are exactly the single-process batch, whatever the
    number of processes.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        device: torch.device,
        normalizer: Normalizer,
        channels_last: bool,
        train: bool,
        seed: int = 0,
        augmentation: Augmentation | None = None,
        num_classes: int = 10,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        if batch_size > len(split):
            raise UserError(f"--batch-size {batch_size} is larger than the data set ({len(split)} images)")
        if train:
            check_global_batch(batch_size, world_size)
        self.split = split.to(device)
        self.batch_size = batch_size
        self.device = device
        self.normalizer = normalizer
        self.channels_last = channels_last
        self.train = train
        self.seed = seed
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.num_classes = num_classes
        self.rank = rank
        self.world_size = world_size
        # This process's slice [share_start, share_end) of each global batch; all of it in evaluation.
        self.share_start, self.share_end = shard_bounds(batch_size, rank, world_size) if train else (0, batch_size)
        # Built once: torchvision's policy objects are cheap but hold the op table.
        self.policy = policy_transform(self.augmentation.policy) if self.augmentation.policy != "none" else None

    @property
    def share(self) -> int:
        """This process's images a step."""
        return self.share_end - self.share_start

    @property
    def mixes(self) -> bool:
        """True when training targets are soft (B, num_classes) probabilities, not labels."""
        return self.train and self.augmentation.mixes

    def __len__(self) -> int:
        if self.train:
            return len(self.split) // self.batch_size
        return -(-len(self.split) // self.batch_size)

    def plan(self, epoch: int) -> EpochPlan:
        """Draw the epoch's choices. Optional augmentations draw after the classic ones, so
        turning one on leaves the order, crops and flips of a run unchanged."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        aug = self.augmentation
        n, height, width = len(self.split), self.split.images.shape[2], self.split.images.shape[3]
        order = torch.randperm(n, generator=generator)
        offsets = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=generator)
        flips = torch.randint(0, 2, (n,), generator=generator).bool()
        if aug.flip == "alternating":
            flips = self.alternating_flips(epoch)[order]
        centres = policy_seeds = mix = None
        if aug.cutout > 0:
            # Centres anywhere (DeVries & Taylor 2017), or where the whole square fits (airbench96).
            span = aug.cutout if aug.cutout_inside else 1
            low = aug.cutout // 2 if aug.cutout_inside else 0
            centres = torch.stack([low + torch.randint(0, max(1, height - span + 1), (n,), generator=generator),
                                   low + torch.randint(0, max(1, width - span + 1), (n,), generator=generator)],
                                  dim=1).to(self.device)
        if self.policy is not None:
            base = int(torch.randint(0, 2**62, (1,), generator=generator))
            policy_seeds = (base + torch.arange(n)) % 2**63
        if aug.mixes:
            # numpy draws the Beta variates (torch's Beta takes no generator), seeded from ours.
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
            mix = draw_mix_plan(rng, len(self), aug, height, width)
        jitter = None
        if aug.jitters:
            uniform = torch.rand(n, 2, generator=generator) * 2 - 1  # [-1, 1)
            jitter = (uniform * torch.tensor([aug.brightness, aug.contrast]) + torch.tensor([0.0, 1.0])).to(self.device)
        return EpochPlan(order.to(self.device), offsets.to(self.device), flips.to(self.device), centres,
                         policy_seeds, mix, jitter)

    def alternating_flips(self, epoch: int) -> torch.Tensor:
        """Per image: whether it is mirrored this epoch. A random half in the first epoch, from a
        generator of the seed alone, then each image's choice inverted every epoch (airbench): every
        image is seen both ways every two epochs, and a resumed run recomputes it from the epoch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
        first = torch.randint(0, 2, (len(self.split),), generator=generator)
        return first.bool() ^ bool(epoch % 2)

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, targets) for the steps start_step.. of the given epoch.

        Crops, flips and normalisation are made for several batches at once (CHUNK_IMAGES images):
        on a GPU a small batch's step is bound by the host launching kernels, and the ~30 small ops
        of a batch's gather/crop/flip/normalise would otherwise be launched every step. Each
        image's values are the same whatever the chunking, so resume still replays exactly.
        """
        if not self.train:
            yield from self._evaluation_batches()
            return
        plan = self.plan(epoch)
        # With mixing, each step's rows start with the image before this rank's share: the partner
        # of its first image (the neighbour in the global batch), so that mixing pairs are those
        # of the single-process batch.
        lead = 1 if plan.mix is not None else 0
        rows = self.share + lead
        steps_per_chunk = max(1, CHUNK_IMAGES // rows)
        for first in range(start_step, len(self), steps_per_chunk):
            last = min(first + steps_per_chunk, len(self))
            inputs, labels = self._augmented_chunk(plan, self._positions(first, last, lead))
            for step in range(first, last):
                at = (step - first) * rows
                batch_inputs, targets = inputs[at:at + rows], labels[at:at + rows]
                if plan.mix is not None:
                    batch_inputs, targets, _ = mix_batch(batch_inputs[1:], targets[1:], plan.mix, step,
                                                         self.num_classes, partner=(batch_inputs[:-1], targets[:-1]))
                yield batch_inputs, targets

    def _evaluation_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps_per_chunk = max(1, CHUNK_IMAGES // self.batch_size)
        for first in range(0, len(self), steps_per_chunk):
            chunk = slice(first * self.batch_size, min((first + steps_per_chunk) * self.batch_size, len(self.split)))
            inputs = self.normalizer(self.split.images[chunk], self.channels_last)
            labels = self.split.labels[chunk]
            for start in range(0, len(labels), self.batch_size):
                yield inputs[start:start + self.batch_size], labels[start:start + self.batch_size]

    def _positions(self, first: int, last: int, lead: int) -> torch.Tensor:
        """Plan positions of this rank's rows for steps first..last-1: its share of each global
        batch, preceded by `lead` images before it (wrapping around inside the same batch)."""
        within = torch.arange(self.share_start - lead, self.share_end) % self.batch_size
        return (torch.arange(first, last)[:, None] * self.batch_size + within[None, :]).reshape(-1)

    def _augmented_chunk(self, plan: EpochPlan, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop and flip (uint8), then the policy (uint8), normalise, then the colour jitter and Cutout
        (float)."""
        aug = self.augmentation
        on_device = positions.to(self.device)
        index = plan.order[on_device]
        images = random_crop_flip(self.split.images[index], plan.offsets[on_device], plan.flips[on_device],
                                  aug.crop_padding, aug.pad_mode)
        if self.policy is not None:
            images = apply_policy(self.policy, images, plan.policy_seeds[positions])
        inputs = self.normalizer(images, self.channels_last)
        if plan.jitter is not None:
            jitter = plan.jitter[on_device]
            inputs = colour_jitter(inputs, jitter[:, 0], jitter[:, 1])
        if plan.cutout_centres is not None:
            inputs = cutout(inputs, plan.cutout_centres[on_device], aug.cutout)
        return inputs, self.split.labels[index]
