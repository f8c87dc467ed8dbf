"""The record script's route (hiverge/cifar10-speedrun): each technique it adds against the script's
own rule, the speedrun recipe, and the trainer's guarantees for it."""
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli, synthetic_images
from torch import nn

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.augmentations import Augmentation, colour_jitter, tta_logits
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.models.registry import modeltype
from resnet_cifar.models.techniques import set_bn_momentum, whitening_images
from resnet_cifar.optim.groups import group_rules
from resnet_cifar.optim.muon import NS_COEFFICIENTS, MuonSGD, orthogonalize
from resnet_cifar.optim.schedules import LRSchedule, set_lrs
from resnet_cifar.recipes import apply_length, apply_recipe
from resnet_cifar.results.evaluation import evaluate

CPU = torch.device("cpu")


# --- Muon as the record script changes it -------------------------------------------------------------------

def record_renorm_steps(total: int) -> list[int]:
    """The steps (counted from 1) at which cifar10_speedrun.py's Muon renormalises the filters."""
    due, last = [], 0
    for count in range(1, total + 1):
        if count - last >= 2 + int(15 * count / total):
            due.append(count)
            last = count
    return due


def test_the_filters_are_renormalised_on_the_record_scripts_steps():
    total = 243  # 7.59 epochs of 32 steps
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    optimizer = MuonSGD([{"params": [weight], "muon": True, "momentum": 0.655, "renorm_every": 2,
                          "renorm_growth": 15.0}], lr=0.2, momentum=0.825, nesterov=True)
    ours = []
    for step in range(total):
        weight.grad = torch.randn_like(weight)
        set_lrs(optimizer, [0.2], progress=(step + 1) / total)
        optimizer.step()
        group = optimizer.param_groups[0]
        if group["renorm_last"] == group["muon_steps"]:
            ours.append(step + 1)
    assert ours == record_renorm_steps(total)
    assert ours[:3] == [2, 4, 6] and 20 < len(ours) < 40  # every 2 steps at first, every 16 at the end


def test_every_step_renormalises_by_default():
    weight = torch.randn(8, 4, 3, 3, requires_grad=True)
    optimizer = MuonSGD([{"params": [weight], "muon": True}], lr=0.2, momentum=0.6, nesterov=True)
    for _ in range(3):
        weight.grad = torch.randn_like(weight)
        optimizer.step()
        assert optimizer.param_groups[0]["renorm_last"] == optimizer.param_groups[0]["muon_steps"]


def test_muon_weight_decay_is_decoupled():
    weight = torch.randn(8, 4, 3, 3)
    param = weight.clone().requires_grad_()
    optimizer = MuonSGD([{"params": [param], "muon": True, "weight_decay": 0.0016, "renorm_every": 10**6}],
                        lr=0.205, momentum=0.655, nesterov=True)
    param.grad = torch.zeros_like(param)  # no update: only the decay moves the weights
    optimizer.step()
    assert torch.equal(param.detach(), weight * (1 - 0.205 * 0.0016))


def record_zeropower(G, coefficients):
    """cifar10_speedrun.py's iteration on one matrix (its scaling to a target magnitude cancels in
    the normalisation that follows it), in bfloat16 as this trainer runs it."""
    a, b, c = coefficients
    X = G.bfloat16()
    X = X / (X.norm() + 1e-7)
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.T
    for _ in range(3):
        A = X @ X.T
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.T if transposed else X


@pytest.mark.parametrize("shape", [(64, 24, 3, 3), (256, 64, 3, 3)])
def test_the_record_coefficients(shape):
    """The record's coefficients in airbench94_muon's iteration (bit for bit); the record script
    multiplies c into A @ A rather than A, which differs only in bfloat16 rounding."""
    torch.manual_seed(0)
    update = torch.randn(shape)
    ours = orthogonalize(update, coefficients=NS_COEFFICIENTS["speedrun"])
    record = (3.4576, -4.7391, 2.0843)
    matrix = update.reshape(shape[0], -1)
    x = matrix.bfloat16() / (matrix.bfloat16().norm() + 1e-7)
    x = x.T if matrix.size(0) > matrix.size(1) else x
    for _ in range(3):
        gram = x @ x.T
        x = record[0] * x + (record[1] * gram + record[2] * gram @ gram) @ x
    x = x.T if matrix.size(0) > matrix.size(1) else x
    assert torch.equal(ours, x.view(shape))
    assert torch.allclose(ours.float(), record_zeropower(matrix, record).view(shape).float(), atol=0.02)
    assert not torch.equal(ours, orthogonalize(update))


def test_the_muon_state_resumes_exactly():
    torch.manual_seed(1)
    weights = [torch.randn(8, 4, 3, 3, requires_grad=True) for _ in range(2)]
    grads = [[torch.randn(8, 4, 3, 3) for _ in range(2)] for _ in range(12)]

    def optimizer_of(params):
        return MuonSGD([{"params": params, "muon": True, "momentum": 0.655, "renorm_every": 2, "renorm_growth": 15.0,
                         "weight_decay": 0.0016}], lr=0.2, momentum=0.825, nesterov=True)

    def steps(params, optimizer, first, last):
        for step in range(first, last):
            for param, grad in zip(params, grads[step], strict=True):
                param.grad = grad.clone()
            set_lrs(optimizer, [0.2 * (1 - step / 12)], progress=(step + 1) / 12)
            optimizer.step()

    resumed_weights = [weight.detach().clone().requires_grad_() for weight in weights]
    steps(weights, optimizer_of(weights), 0, 12)
    first = optimizer_of(resumed_weights)
    steps(resumed_weights, first, 0, 5)
    second = optimizer_of(resumed_weights)
    second.load_state_dict(first.state_dict())
    steps(resumed_weights, second, 5, 12)
    assert all(torch.equal(a, b) for a, b in zip(weights, resumed_weights, strict=True))


# --- data and evaluation ----------------------------------------------------------------------------------------

def loader_of(**augmentation):
    images, labels = synthetic_images(64, seed=3)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    return BatchLoader(split, 16, CPU, Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU), False, train=True, seed=0,
                       augmentation=Augmentation(crop_padding=2, pad_mode="reflect", **augmentation))


def test_the_colour_jitter_is_drawn_per_image_and_leaves_the_other_draws():
    plain, jittered = loader_of(), loader_of(brightness=0.14, contrast=0.13)
    plan, jitter_plan = plain.plan(1), jittered.plan(1)
    assert plan.jitter is None
    assert all(torch.equal(getattr(plan, name), getattr(jitter_plan, name)) for name in ("order", "offsets", "flips"))
    shifts, scales = jitter_plan.jitter[:, 0], jitter_plan.jitter[:, 1]
    assert shifts.abs().max() <= 0.14 and (scales - 1).abs().max() <= 0.13 and shifts.std() > 0.05
    assert not torch.equal(jitter_plan.jitter, jittered.plan(2).jitter)  # drawn anew each epoch
    for (a, _), (b, _), at in zip(plain.epoch(1), jittered.epoch(1), range(0, 64, 16), strict=True):
        expected = (a + shifts[at:at + 16].view(-1, 1, 1, 1)) * scales[at:at + 16].view(-1, 1, 1, 1)
        assert torch.allclose(b, expected, atol=1e-6)


def test_colour_jitter_adds_then_scales():
    images = torch.ones(2, 3, 2, 2)
    out = colour_jitter(images, torch.tensor([0.1, -0.1]), torch.tensor([2.0, 0.5]))
    assert torch.allclose(out[0], torch.full((3, 2, 2), 2.2)) and torch.allclose(out[1], torch.full((3, 2, 2), 0.45))


@pytest.mark.parametrize("inside", [False, True])
def test_cutout_inside_keeps_the_whole_square_in_the_image(inside):
    loader = loader_of(cutout=12, cutout_inside=inside)
    centres = loader.plan(0).cutout_centres
    if inside:
        assert centres.min() >= 6 and centres.max() <= 32 - 12 + 6
        inputs, _ = next(loader.epoch(0))
        plain, _ = next(loader_of(cutout=0).epoch(0))
        zeroed = (inputs != plain).any(1).sum((1, 2))
        assert (zeroed <= 144).all() and (zeroed > 100).all()  # a whole square (unless the image was 0 there)
    else:
        assert centres.min() < 6 or centres.max() > 26  # centres anywhere


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 10, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3)) * 5


def six_views_mean(model, inputs):
    padded = F.pad(inputs, (1, 1, 1, 1), mode="reflect")
    height, width = inputs.shape[2:]
    views = [inputs, padded[:, :, :height, :width], padded[:, :, 2:, 2:]]
    return torch.stack([model(v) for v in views] + [model(v.flip(3)) for v in views]).mean(0)


def test_selective_tta_looks_again_at_the_least_confident_images_only():
    model, inputs = TinyNet().eval(), torch.randn(8, 3, 8, 8)
    with torch.no_grad():
        plain, views = model(inputs), six_views_mean(model, inputs)
        assert torch.equal(tta_logits(model, inputs, "selective", 0.0), plain)
        assert torch.allclose(tta_logits(model, inputs, "selective", 1.0), views, atol=1e-6)
        half = tta_logits(model, inputs, "selective", 0.5)
    unsure = plain.softmax(1).amax(1).argsort()[:4]
    sure = plain.softmax(1).amax(1).argsort()[4:]
    assert torch.allclose(half[unsure], views[unsure], atol=1e-6) and torch.equal(half[sure], plain[sure])


def test_selective_tta_ranks_the_whole_split_whatever_the_batch():
    images, labels = synthetic_images(100, seed=5)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    model = TinyNet().eval()

    def evaluated(batch_size, fraction=0.25):
        loader = BatchLoader(split, batch_size, CPU, Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU), False, train=False)
        return evaluate(model, loader, CPU, "fp32", 10, tta="selective", tta_fraction=fraction, keep_predictions=True)

    small, large = evaluated(7), evaluated(100)
    assert torch.allclose(small.predictions.logits, large.predictions.logits, atol=1e-5)
    loader = BatchLoader(split, 100, CPU, Normalizer(CIFAR10_MEAN, CIFAR10_STD, CPU), False, train=False)
    inputs, _ = next(loader.epoch())
    with torch.no_grad():
        plain, views = model(inputs), six_views_mean(model, inputs)
    unsure = plain.softmax(1).amax(1).argsort()[:25]  # a quarter of the 100 images, the least confident
    changed = (large.predictions.logits != plain).any(1).nonzero().flatten()
    assert sorted(changed.tolist()) == sorted(unsure.tolist())
    assert torch.allclose(large.predictions.logits[unsure], views[unsure], atol=1e-5)
    assert torch.equal(evaluated(10, fraction=0.0).predictions.logits, plain)


# --- the net and the recipe -----------------------------------------------------------------------------------

def test_silu_in_the_groups_gelu_after_the_whitening():
    model = modeltype("airbench94", activation="silu")
    assert isinstance(model.activation, nn.GELU)
    assert all(isinstance(group.activation, nn.SiLU) for group in model.groups)
    assert sum(p.numel() for p in model.parameters()) == 1_972_792
    with pytest.raises(ValueError, match="activation is for the airbench nets"):
        modeltype("resnet20", activation="silu")


def test_bn_momentum_and_whitening_images():
    model = modeltype("airbench94")
    set_bn_momentum(model, 0.4434)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 6 and all(m.momentum == 0.4434 for m in norms)
    assert len(whitening_images(torch.zeros(5000, 3, 4, 4), 960)) == 960


def speedrun_config(**values):
    return apply_recipe(TrainConfig(recipe="speedrun", **values), set(values))


def test_the_recipe_takes_the_record_scripts_values():
    config, _ = apply_length(speedrun_config(), set(), steps_per_epoch=32)
    assert config.model == "airbench94" and config.activation == "silu"
    assert config.iterations == 243  # ceil(7.59 x 32), as the script's total_train_steps
    assert (config.batch_size, config.muon_lr, config.muon_momentum, config.momentum) == (1536, 0.205, 0.655, 0.825)
    assert config.muon_weight_decay == pytest.approx(1.0418e-6 * 1536)
    assert (config.muon_renorm_every, config.muon_renorm_growth, config.muon_coefficients) == (2, 15.0, "speedrun")
    assert (config.label_smoothing, config.bn_momentum, config.whitening_images) == (0.09, 0.4434, 960)
    assert (config.brightness, config.contrast, config.tta, config.tta_fraction) == (0.1399, 0.1308, "selective", 0.25)
    rules = group_rules(config)
    schedule = LRSchedule(config, 32, [rules["other"], rules["norm_bias"], rules["whiten_bias"], rules["muon"]])
    head, bias, whiten, muon = schedule.group_lrs(0, 0)
    # the script's lrs on its summed loss: head 0.5415, biases 0.0573 (x 1536 on the mean loss), filters 0.205
    assert head == pytest.approx(0.5415 * 1536 * (9 / 256) ** 2) and bias == pytest.approx(0.0573 * 1536)
    assert whiten == pytest.approx(bias) and muon == pytest.approx(0.205)
    assert schedule.group_lrs(0, 6)[2] > 0 and schedule.group_lrs(0, 7)[2] == 0  # ceil(0.19 x 32) = 7 steps
    assert schedule.group_lrs(7, 18)[3] == pytest.approx(0.205 / 243)  # linear to 0 at the last step


def test_the_recipe_dry_run_and_its_refusals(capsys):
    code, out, err = run_cli(capsys, "--recipe", "speedrun", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["config"]["model"] == "airbench94" and plan["length"].startswith("7.59 epochs")
    code, out, err = run_cli(capsys, "--recipe", "speedrun", "--model", "airbench95", "--dry-run")
    assert code == 0 and json.loads(out)["config"]["model"] == "airbench95"
    code, _, err = run_cli(capsys, "--recipe", "speedrun", "--model", "resnet20", "--dry-run")
    assert code == 2 and "--recipe speedrun is for airbench94, airbench95, airbench96" in err
    code, _, err = run_cli(capsys, "--model", "resnet20", "--activation", "silu", "--dry-run")
    assert code == 2 and "--activation is for the airbench nets" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(capsys, "--model", "airbench94", "--activation", "relu", "--dry-run")
    assert code == 2 and "'gelu', 'silu'" in err


@pytest.mark.parametrize(("recipe", "model", "epochs"), [("airbench95", "airbench95", 15),
                                                         ("airbench96", "airbench96", 37)])
def test_the_larger_airbench_recipes_train_their_own_net(capsys, recipe, model, epochs):
    code, out, err = run_cli(capsys, "--recipe", recipe, "--dry-run")
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["model"], config["epochs"], config["lookahead"]) == (model, epochs, True)
    assert config["cutout_inside"] == (recipe == "airbench96")
