"""Each augmentation's output on tiny inputs, TTA, and their place in the loader."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import synthetic_images
from torch import nn

from resnet_cifar.data.augmentations import (
    Augmentation,
    MixPlan,
    apply_policy,
    cutout,
    draw_mix_plan,
    mix_batch,
    policy_transform,
    random_crop_flip,
    tta_logits,
)
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split
from resnet_cifar.data.loader import BatchLoader, Normalizer

CPU = torch.device("cpu")


def loader(augmentation: Augmentation, n=64, batch_size=16, seed=3) -> BatchLoader:
    images, labels = synthetic_images(n, 5)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    return BatchLoader(split, batch_size, CPU, Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU), channels_last=False,
                       train=True, seed=seed, augmentation=augmentation)


def test_reflect_crop_matches_torch_reflect_padding():
    images = torch.from_numpy(synthetic_images(12, 1)[0])
    gen = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 9, (12, 2), generator=gen)
    flips = torch.randint(0, 2, (12,), generator=gen).bool()
    out = random_crop_flip(images, offsets, flips, padding=4, pad_mode="reflect")
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="reflect")
    for i in range(12):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        expected = padded[i, :, dy:dy + 32, dx:dx + 32]
        expected = expected.flip(2) if flips[i] else expected
        assert torch.equal(out[i].float(), expected)


@pytest.mark.parametrize(("centre", "zeroed"), [((16, 16), 12 * 12), ((0, 0), 6 * 6), ((31, 10), 7 * 12),
                                                ((5, 6), 11 * 12)])
def test_cutout_zeroes_the_square_inside_the_image(centre, zeroed):
    images = torch.ones(1, 3, 32, 32)
    out = cutout(images, torch.tensor([centre]), 12)
    assert int((out[0, 0] == 0).sum()) == zeroed  # 12 x 12 where it fits, the clipped part where not
    assert torch.equal(out[0, 0] == 0, out[0, 2] == 0)  # every channel
    rows, cols = (out[0, 0] == 0).nonzero(as_tuple=True)
    assert int(rows.min()) == max(0, centre[0] - 6) and int(rows.max()) == min(31, centre[0] + 5)
    assert int(cols.min()) == max(0, centre[1] - 6) and int(cols.max()) == min(31, centre[1] + 5)


def test_mixup_mixes_inputs_and_targets_with_one_lambda():
    rng = np.random.default_rng(0)
    plan = draw_mix_plan(rng, 50, Augmentation(mixup=0.4), 32, 32)
    assert ((plan.lams >= 0) & (plan.lams <= 1)).all() and not plan.cutmix.any()
    inputs, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    mixed, targets, lam = mix_batch(inputs, labels, plan, 7, num_classes=10)
    assert lam == pytest.approx(plan.lams[7])
    assert torch.allclose(mixed, lam * inputs + (1 - lam) * inputs.roll(1, 0))
    assert targets[1, 1] == pytest.approx(lam) and targets[1, 0] == pytest.approx(1 - lam)
    assert torch.allclose(targets.sum(1), torch.ones(4))


def test_cutmix_lambda_is_the_area_not_pasted_over():
    plan = MixPlan(lams=np.array([0.75]), cutmix=np.array([True]), boxes=np.array([[4, 12, 0, 10]]))
    inputs, labels = torch.arange(2.0)[:, None, None, None].expand(2, 3, 32, 32).contiguous(), torch.tensor([3, 5])
    mixed, targets, lam = mix_batch(inputs, labels, plan, 0, num_classes=10)
    pasted = (mixed[0, 0] != inputs[0, 0]).sum().item()
    assert pasted == 8 * 10
    assert lam == pytest.approx(1 - 80 / 1024)
    assert targets[0, 3] == pytest.approx(lam) and targets[0, 5] == pytest.approx(1 - lam)


def test_cutmix_boxes_follow_lambda_and_both_modes_are_drawn():
    plan = draw_mix_plan(np.random.default_rng(1), 400, Augmentation(mixup=1.0, cutmix=1.0), 32, 32)
    assert 0.35 < plan.cutmix.mean() < 0.65
    heights, widths = plan.boxes[:, 1] - plan.boxes[:, 0], plan.boxes[:, 3] - plan.boxes[:, 2]
    assert ((heights >= 0) & (heights <= 32) & (widths >= 0) & (widths <= 32)).all()


@pytest.mark.slow
def test_policies_are_torchvisions_and_seeded_per_image():
    images = torch.from_numpy(synthetic_images(6, 2)[0])
    for name in ("autoaugment", "randaugment", "trivialaugment"):
        transform = policy_transform(name)
        seeds = torch.arange(6) + 100
        first = apply_policy(transform, images, seeds)
        assert first.dtype == torch.uint8 and first.shape == images.shape
        assert torch.equal(first, apply_policy(transform, images, seeds))  # same seeds, same images
        # Each image depends on its own seed only, not on the batch it came in.
        assert torch.equal(first[2:4], apply_policy(transform, images[2:4], seeds[2:4]))
    state = torch.get_rng_state()
    apply_policy(policy_transform("trivialaugment"), images, torch.arange(6))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_optional_augmentations_leave_the_classic_choices_unchanged():
    plain = loader(Augmentation()).plan(2)
    extra = loader(Augmentation(cutout=8, mixup=0.2, policy="randaugment")).plan(2)
    assert torch.equal(plain.order, extra.order) and torch.equal(plain.offsets, extra.offsets)
    assert torch.equal(plain.flips, extra.flips)
    assert extra.cutout_centres is not None and extra.policy_seeds is not None and extra.mix is not None


@pytest.mark.parametrize("augmentation", [Augmentation(cutout=8, pad_mode="reflect"),
                                          Augmentation(policy="autoaugment"),
                                          Augmentation(mixup=0.5, cutmix=1.0)], ids=["cutout", "policy", "mix"])
def test_a_resumed_epoch_replays_the_same_augmented_batches(augmentation):
    full = list(loader(augmentation).epoch(4))
    resumed = list(loader(augmentation).epoch(4, start_step=2))
    assert len(full) == 4 and len(resumed) == 2
    for (x, y), (rx, ry) in zip(full[2:], resumed, strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_mixing_loader_mixes_each_image_with_its_neighbour():
    """Against the same loader without mixing: every mixed image is lam x its own image plus
    (1 - lam) x its neighbour's, and its target weighs the two labels the same way."""
    plain, labels = next(iter(loader(Augmentation()).epoch(0)))
    mixed, targets = next(iter(loader(Augmentation(mixup=1.0)).epoch(0)))
    partner, partner_labels = plain.roll(1, 0), labels.roll(1, 0)
    row = int((labels != partner_labels).nonzero()[0])
    lam = float(targets[row, labels[row]])
    assert 0 < lam < 1
    assert torch.allclose(mixed, lam * plain + (1 - lam) * partner, atol=1e-5)
    expected = lam * F.one_hot(labels, 10).float() + (1 - lam) * F.one_hot(partner_labels, 10).float()
    assert torch.allclose(targets, expected, atol=1e-6)
    assert not torch.allclose(mixed, plain)


class Asymmetric(nn.Module):
    """Logits that tell an image from its mirror: the left half's mean minus the right half's."""

    def forward(self, x):
        left, right = x[..., :16].mean((1, 2, 3)), x[..., 16:].mean((1, 2, 3))
        return torch.stack([left - right, right - left, x.mean((1, 2, 3))], dim=1)


def test_flip_tta_averages_the_image_and_its_mirror():
    model, x = Asymmetric(), torch.randn(5, 3, 32, 32)
    flip = tta_logits(model, x, "flip")
    assert torch.allclose(flip, 0.5 * (model(x) + model(x.flip(3))))
    assert torch.allclose(flip[:, :2], torch.zeros(5, 2), atol=1e-6)  # a mirror-odd logit cancels
    assert torch.equal(tta_logits(model, x, "none"), model(x))


def test_flip_translate_tta_adds_one_pixel_shifts():
    model, x = Asymmetric(), torch.randn(2, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    def pair(v):
        return 0.5 * (model(v) + model(v.flip(3)))
    expected = 0.5 * pair(x) + 0.25 * pair(padded[..., :32, :32]) + 0.25 * pair(padded[..., 2:, 2:])
    assert torch.allclose(tta_logits(model, x, "flip-translate"), expected, atol=1e-6)
