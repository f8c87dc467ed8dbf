"""ModelEMA's update rule, checked by hand on tiny modules."""
import pytest
import torch
from torch import nn

from resnet_cifar.optim.ema import ModelEMA


def test_ema_update_on_two_parameters_with_the_warm_up():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-2.0)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(0.0)
    ema.update(model)  # n = 0: d = min(0.9, 1 / 10)
    assert ema.module.weight.item() == pytest.approx(0.1 * 1 + 0.9 * 3)
    assert ema.module.bias.item() == pytest.approx(0.1 * -2 + 0.9 * 0)
    ema.update(model)  # n = 1: d = 2 / 11
    assert ema.module.weight.item() == pytest.approx(2 / 11 * 2.8 + 9 / 11 * 3)
    assert ema.updates == 2
    assert model.weight.item() == 3.0  # the trained model is untouched


def test_the_warm_up_ends_at_the_decay():
    ema = ModelEMA(nn.Linear(1, 1), decay=0.9)
    decays = []
    for n in range(100):
        ema.updates = n
        decays.append(ema.current_decay())
    assert decays[0] == pytest.approx(0.1) and decays[79] < 0.9 and decays[80] == 0.9 == decays[99]
    assert decays == sorted(decays)  # never falls back


def test_a_short_run_average_forgets_its_random_start():
    """300 updates of 0.99 after the weights jumped from 0 to 1: with the warm-up the start's share of
    the average is gone; without it (updates already past the warm-up) 0.99^300, ~5%, stays."""

    def start_share(warm_up: bool) -> float:
        model = nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            model.weight.fill_(0.0)
        ema = ModelEMA(model, decay=0.99)
        if not warm_up:
            ema.updates = 10**6
        with torch.no_grad():
            model.weight.fill_(1.0)
        for _ in range(300):
            ema.update(model)
        return 1 - ema.module.weight.item()

    assert start_share(warm_up=True) < 1e-4
    assert start_share(warm_up=False) == pytest.approx(0.99**300, rel=1e-4)


def test_ema_copies_buffers():
    model = nn.BatchNorm2d(2)
    ema = ModelEMA(model, decay=0.99)
    model.running_mean.fill_(5.0)
    ema.update(model)
    assert torch.equal(ema.module.running_mean, torch.full((2,), 5.0))
