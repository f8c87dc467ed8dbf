"""`--precision auto`: measured once per (device, torch, model, batch), cached, the fastest chosen;
a typed precision or layout is never measured."""
import json

import pytest
import torch
from helpers import synthetic_dataset

from resnet_cifar.config import TrainConfig
from resnet_cifar.training import assembly, precision_choice
from resnet_cifar.training.precision_choice import Choice, choose

CPU = torch.device("cpu")


def fake_measure(speeds, calls):
    def measure(device, model, batch, classes, precision, channels_last, slowest_allowed=None):
        calls.append((precision, channels_last, slowest_allowed))
        return speeds[(precision, channels_last)]
    return measure


def test_the_fastest_candidate_is_chosen_and_cached(tmp_path):
    # 2-core EPYC without AVX-512 (bench/README.md): channels_last 1.2x NCHW in fp32, bf16 emulated and slow.
    speeds = {("fp32", False): 217.3, ("fp32", True): 265.9, ("bf16", False): 23.0, ("bf16", True): 20.0}
    calls = []
    cache = tmp_path / "precision.json"
    first = choose(CPU, "resnet20", 500, measure=fake_measure(speeds, calls), cache=cache)
    assert (first.precision, first.channels_last, first.cached) == ("fp32", True, False)
    assert [c[:2] for c in calls] == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    # Each candidate after the first may stop early when far slower than the best so far.
    assert calls[0][2] is None and calls[2][2] == pytest.approx(265.9 / 4)
    assert first.figures == {"fp32 NCHW": 217.3, "fp32 channels_last": 265.9, "bf16 NCHW": 23.0,
                             "bf16 channels_last": 20.0}
    again = choose(CPU, "resnet20", 500, measure=fake_measure(speeds, calls), cache=cache)
    assert again.cached and len(calls) == 4 and (again.precision, again.channels_last) == ("fp32", True)
    assert "precision auto: fp32 channels_last, the fastest here (img/s cached: fp32 channels_last 266" \
        in again.describe()
    # Another model or batch is another measurement, kept beside the first.
    choose(CPU, "resnet18", 256, measure=fake_measure(speeds, calls), cache=cache)
    assert len(calls) == 8 and len(json.loads(cache.read_text())) == 2


def test_an_unreadable_cache_is_measured_again(tmp_path):
    cache = tmp_path / "precision.json"
    cache.write_text("{not json")
    calls = []
    speeds = {("fp32", False): 1.0, ("fp32", True): 2.0, ("bf16", False): 3.0, ("bf16", True): 4.0}
    assert choose(CPU, "resnet20", 32, measure=fake_measure(speeds, calls), cache=cache).precision == "bf16"
    assert len(calls) == 4 and json.loads(cache.read_text())


def test_build_run_measures_only_a_fully_automatic_choice(monkeypatch):
    chosen = Choice("bf16", False, {"bf16 NCHW": 9.0}, True)
    asked = []
    monkeypatch.setattr(precision_choice, "choose", lambda *args, **kwargs: asked.append(args) or chosen)
    data = synthetic_dataset(n_train=64, n_test=16)
    parts = assembly.build_run(TrainConfig(model="resnet20", batch_size=16, epochs=1), data)
    assert (parts.precision, parts.channels_last, parts.precision_choice) == ("bf16", False, chosen)
    assert asked[0][1:3] == ("resnet20", 16)
    typed = assembly.build_run(TrainConfig(model="resnet20", batch_size=16, epochs=1, precision="fp32"), data)
    assert typed.precision_choice is None and len(asked) == 1
    layout = assembly.build_run(TrainConfig(model="resnet20", batch_size=16, epochs=1, channels_last=True), data)
    assert layout.precision_choice is None and layout.channels_last is True and len(asked) == 1


def test_a_real_measurement_is_a_speed():
    value = precision_choice.img_per_s(CPU, "resnet20", 8, 10, "fp32", False, seconds=0.05)
    assert value > 0
