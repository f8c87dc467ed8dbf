"""Device, precision and layout choice, and the one autocast path."""

import pytest
import torch

from resnet_cifar.utils import devices
from resnet_cifar.utils.devices import resolve_precision


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_auto_never_picks_a_slow_cpu_combination(monkeypatch, fast_bf16):
    # bench/precision_matrix.py: with native bf16, bf16 + channels_last is the fastest cell (2.7x
    # fp32 NCHW); on another CPU bf16 NCHW and fp32 channels_last were ~3x slower than fp32 NCHW,
    # so auto picks the pair together or falls back to fp32 NCHW, never a mixed combination.
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: fast_bf16)
    choice = resolve_precision(torch.device("cpu"), "auto", None)
    assert choice == (("bf16", True) if fast_bf16 else ("fp32", False))
    assert resolve_precision(torch.device("cpu"), "fp32", None) == ("fp32", False)
    assert resolve_precision(torch.device("cpu"), "bf16", None) == ("bf16", True)
    assert resolve_precision(torch.device("cpu"), "bf16", False) == ("bf16", False)  # explicit wins


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_auto_on_cuda_picks_the_half_precision_the_gpu_has_with_channels_last(monkeypatch, bf16_supported):
    # bench/README.md: on an H200 bf16 and fp16 with channels_last were the fastest cells of the
    # precision matrix (2.6x fp32 NCHW); bf16 needs no loss scaling, so it wins where it exists.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert resolve_precision(torch.device("cuda"), "auto", None) == ("bf16" if bf16_supported else "fp16", True)
    assert resolve_precision(torch.device("cuda"), "fp32", None) == ("fp32", True)
    assert resolve_precision(torch.device("cuda"), "auto", False)[1] is False  # explicit wins
    assert resolve_precision(torch.device("cuda"), "fp16", None) == ("fp16", True)


def test_one_autocast_path_runs_every_precision_on_cpu():
    model = torch.nn.Linear(4, 2)
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with devices.autocast(torch.device("cpu"), precision):
            assert model(torch.randn(3, 4)).dtype == dtype
