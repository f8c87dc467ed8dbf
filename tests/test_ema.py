"""ModelEMA's update rule, checked by hand on tiny modules."""
import pytest
import torch
from torch import nn

from ema import ModelEMA


def test_ema_update_on_two_parameters():
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-2.0)
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(0.0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1 + 0.1 * 3)
    assert ema.module.bias.item() == pytest.approx(0.9 * -2 + 0.1 * 0)
    ema.update(model)
    assert ema.module.weight.item() == pytest.approx(0.9 * 1.2 + 0.1 * 3)
    assert model.weight.item() == 3.0  # the trained model is untouched


def test_ema_copies_buffers():
    model = nn.BatchNorm2d(2)
    ema = ModelEMA(model, decay=0.99)
    model.running_mean.fill_(5.0)
    ema.update(model)
    assert torch.equal(ema.module.running_mean, torch.full((2,), 5.0))
