"""The batch loader: crop and flip per image, normalisation, replay of any epoch from any step, batch rules."""

import pytest
import torch
import torch.nn.functional as F
from helpers import synthetic_images

from resnet_cifar.data.augmentations import random_crop_flip
from resnet_cifar.data.datasets import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    Split,
)
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.errors import UserError

CPU = torch.device("cpu")


def tiny_split(n=64):
    images, labels = synthetic_images(n, seed=3)
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


def make_loader(split, batch_size=16, train=True, seed=0, channels_last=False):
    return BatchLoader(split, batch_size, CPU, Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU),
                       channels_last, train=train, seed=seed)


def reference_crop_flip(image, dy, dx, flip):
    """The torchvision recipe for one image: zero-pad 4, crop 32x32 at (dy, dx), then flip."""
    out = F.pad(image, (4, 4, 4, 4))[:, dy:dy + 32, dx:dx + 32]
    return out.flip(2) if flip else out


def test_crop_flip_matches_per_image_reference():
    images = torch.from_numpy(synthetic_images(16, 5)[0])
    gen = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 9, (16, 2), generator=gen)
    flips = torch.randint(0, 2, (16,), generator=gen).bool()
    out = random_crop_flip(images, offsets, flips)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for i in range(16):
        expected = reference_crop_flip(images[i], int(offsets[i, 0]), int(offsets[i, 1]), bool(flips[i]))
        assert torch.equal(out[i], expected)


def test_centre_offset_without_flip_is_identity():
    images = torch.from_numpy(synthetic_images(4, 5)[0])
    out = random_crop_flip(images, torch.full((4, 2), 4), torch.zeros(4, dtype=torch.bool))
    assert torch.equal(out, images)


def test_training_batches_vary_per_sample():
    # 64 copies of one image: after augmentation they must not all be the same.
    image = torch.from_numpy(synthetic_images(1, 7)[0]).expand(64, 3, 32, 32).contiguous()
    loader = make_loader(Split(image, torch.zeros(64, dtype=torch.long)), batch_size=64)
    inputs, _ = next(loader.epoch(0))
    assert inputs.shape == (64, 3, 32, 32) and inputs.dtype == torch.float32
    distinct = {tuple(x.flatten()[::97].tolist()) for x in inputs}
    assert len(distinct) > 20


def test_normalisation_uses_cifar_statistics():
    images = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    out = Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU)(images, channels_last=False)
    expected = (128 / 255 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    assert torch.allclose(out[0, :, 0, 0], expected, atol=1e-6)
    assert Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU)(images, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)


def test_loader_replays_any_epoch_from_any_step():
    split = tiny_split(64)
    full = [x for x, _ in make_loader(split).epoch(3)]
    resumed = [x for x, _ in make_loader(split).epoch(3, start_step=2)]
    assert len(full) == 4 and len(resumed) == 2
    assert all(torch.equal(a, b) for a, b in zip(full[2:], resumed, strict=True))
    other_epoch = [x for x, _ in make_loader(split).epoch(4)]
    assert not torch.equal(full[0], other_epoch[0])
    other_seed = [x for x, _ in make_loader(split, seed=1).epoch(3)]
    assert not torch.equal(full[0], other_seed[0])


def test_training_drops_partial_batch_eval_keeps_all():
    split = tiny_split(70)
    assert len(make_loader(split, 16)) == 4
    eval_loader = make_loader(split, 16, train=False)
    assert len(eval_loader) == 5
    assert sum(len(y) for _, y in eval_loader.epoch()) == 70
    labels = torch.cat([y for _, y in eval_loader.epoch()])
    assert torch.equal(labels, split.labels)  # evaluation: every image once, in order


def test_loader_rejects_bad_batch_sizes():
    with pytest.raises(UserError, match="larger than the data set"):
        make_loader(tiny_split(10), batch_size=11)
    with pytest.raises(UserError, match="at least 1"):
        make_loader(tiny_split(10), batch_size=0)
