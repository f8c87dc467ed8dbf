import math

import pytest
import torch

import assembly
import devices
import progress
import training
from config import TrainConfig
from datasets import Dataset, Split
from devices import resolve_precision
from schedules import LRSchedule
from training import train_model

from conftest import synthetic_images


def synthetic_dataset(n_train=320, n_test=100):
    tx, ty = synthetic_images(n_train, 0)
    vx, vy = synthetic_images(n_test, 1)
    return Dataset(Split(torch.from_numpy(tx), torch.from_numpy(ty)),
                   Split(torch.from_numpy(vx), torch.from_numpy(vy)),
                   tuple(f"c{i}" for i in range(10)), source="synthetic")


@pytest.mark.slow
def test_loss_falls_on_a_learnable_task(tmp_path):
    config = TrainConfig(model="resnet20", epochs=4, batch_size=32, lr=0.05, precision="fp32",
                         scheduler="cosine", quiet=True)
    summary = train_model(config, synthetic_dataset(), tmp_path, log=lambda msg: None)
    from helpers import read_metrics
    rows = read_metrics(tmp_path)
    losses = [float(r["train_loss"]) for r in rows]
    assert len(rows) == 4
    assert losses[-1] < 0.5 * losses[0]
    assert summary["test_accuracy"] >= 0.5  # chance is 0.1


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


def test_progress_in_a_log_is_plain_lines():
    import io

    stream = io.StringIO()
    bar = progress.LogLines(total=10, desc="epoch 1", interval=0.0, stream=stream)
    bar.update(4)
    bar.set_postfix_str("loss 1.234 acc 50.0%")
    bar.close()
    assert stream.getvalue() == "epoch 1: step 4/10  loss 1.234 acc 50.0%\n"
    assert progress.make_progress(quiet=True) is progress.NoProgress


def count_dispatched_ops(fn) -> int:
    """ATen operators fn dispatches: a device-independent measure of the host's launch work."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.count


@pytest.mark.slow
def test_the_training_loop_adds_few_ops_to_the_step():
    # On a GPU, a small batch's step is bound by the host launching kernels (README, GPU): the
    # loader and the NaN bookkeeping must not add a chain of small ops to every step.
    # Batches of 8: the loop's ops per step do not grow with the batch, the step's compute does.
    config = TrainConfig(model="resnet20", batch_size=8, precision="fp32", epochs=2)
    parts = assembly.build_run(config, synthetic_dataset(n_train=256))
    inputs, targets = next(parts.train_loader.epoch(5))
    steps = 32  # one epoch
    training.train_step(parts.ctx, inputs, targets, 0.1)  # creates the momentum buffers first
    compute = count_dispatched_ops(lambda: [training.train_step(parts.ctx, inputs, targets, 0.1)
                                            for _ in range(steps)])
    loop = count_dispatched_ops(lambda: training.train_one_epoch(
        parts.ctx, parts.train_loader, 0, 0, training.EpochTotals(), None, lambda: False, progress.NoProgress))
    extra_per_step = (loop - compute) / steps
    # 8.0 now (7.7 with batches of 32); 39.5 with per-batch crops and a chain of per-step NaN-check ops
    assert 0 < extra_per_step <= 10, extra_per_step


@pytest.mark.parametrize("start_step, first_bad", [(0, 3), (0, 23), (7, 21), (7, 30)])
def test_nan_is_reported_at_its_exact_step(monkeypatch, start_step, first_bad):
    # The NaN check runs at each sync (every LOG_EVERY_STEPS steps) over the steps since the
    # last one: the message must still name the first bad step, also in a resumed epoch.
    config = TrainConfig(model="resnet20", batch_size=8, precision="fp32", epochs=1)
    parts = assembly.build_run(config, synthetic_dataset(n_train=320))
    step = {"n": start_step}

    def fake_step(ctx, inputs, targets, lr):
        loss = float("nan") if step["n"] >= first_bad else 1.0
        step["n"] += 1
        return torch.tensor(loss) * len(targets), torch.tensor(0)

    monkeypatch.setattr(training, "train_step", fake_step)
    with pytest.raises(training.NonFiniteLoss, match=f"epoch 1, step {first_bad + 1};"):
        training.train_one_epoch(parts.ctx, parts.train_loader, 0, start_step, training.EpochTotals(), None,
                                 lambda: False, progress.NoProgress)
