"""The learning-rate schedules, step by step."""
import math

import pytest

from resnet_cifar.config import TrainConfig
from resnet_cifar.optim.schedules import LRSchedule


def schedule(**overrides):
    config = TrainConfig(lr=0.1, epochs=10, **overrides)
    return LRSchedule(config, steps_per_epoch=10)


def test_step_and_multistep_schedules():
    step = schedule(scheduler="step", step_size=3, gamma=0.5)
    assert [step.lr(e, 0) for e in (0, 2, 3, 6)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    multi = schedule(scheduler="multistep", milestones=(2, 5))
    assert [multi.lr(e, 9) for e in (1, 2, 4, 5, 9)] == pytest.approx([0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_with_warmup():
    cos = schedule(scheduler="cosine", warmup_epochs=1)
    assert cos.lr(0, 0) == pytest.approx(0.01)  # first of 10 warmup steps
    assert cos.lr(0, 9) == pytest.approx(0.1)
    assert cos.lr(5, 5) == pytest.approx(0.05)  # halfway through the 90 post-warmup steps
    assert cos.lr(9, 9) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_onecycle_rises_then_falls():
    one = schedule(scheduler="onecycle")
    lrs = [one.lr(e, s) for e in range(10) for s in range(10)]
    peak = max(range(100), key=lrs.__getitem__)
    assert peak == 30 and lrs[peak] == pytest.approx(0.1)
    assert lrs[0] == pytest.approx(0.1 / 25)
    assert lrs[-1] < 1e-4


def test_plateau_divides_by_ten_after_patience():
    plateau = schedule(scheduler="plateau", plateau_patience=2)
    for loss in (1.0, 0.9, 0.9, 0.9):
        plateau.end_epoch(loss)
    assert plateau.lr(4, 0) == pytest.approx(0.1)  # two bad epochs: still waiting
    plateau.end_epoch(0.9)
    assert plateau.lr(5, 0) == pytest.approx(0.01)
    restored = schedule(scheduler="plateau", plateau_patience=2)
    restored.load_state_dict(plateau.state_dict())
    assert restored.lr(5, 0) == pytest.approx(0.01) and restored.plateau_best == 0.9


def test_triangular_schedule():
    schedule = LRSchedule(TrainConfig(lr=0.4, epochs=10, scheduler="triangular"), steps_per_epoch=10)
    assert schedule.lr(0, 0) == pytest.approx(0.08)  # 0.2x the peak
    assert schedule.lr(1, 0) == pytest.approx(0.08 + 0.32 * 10 / 20)
    assert schedule.lr(2, 0) == pytest.approx(0.4)  # the peak at 20% of the 100 steps
    assert schedule.lr(6, 0) == pytest.approx(0.2)  # halfway down
    assert schedule.lr(9, 9) == pytest.approx(0.4 / 80)  # the last step; 0 after it
