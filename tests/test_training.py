
import pytest
import torch
from helpers import synthetic_dataset

from resnet_cifar.config import TrainConfig
from resnet_cifar.training import assembly, epoch
from resnet_cifar.training.checkpoint_state import EpochTotals, TrainState
from resnet_cifar.training.epoch import NonFiniteLoss, run_steps_left, train_one_epoch
from resnet_cifar.training.loop import train_model
from resnet_cifar.training.step import train_step
from resnet_cifar.utils import progress


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
    assert summary["split"] == "test" and summary["accuracy"] >= 0.5  # chance is 0.1


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
    train_step(parts.ctx, inputs, targets, 0.1)  # creates the momentum buffers first
    compute = count_dispatched_ops(lambda: [train_step(parts.ctx, inputs, targets, 0.1)
                                            for _ in range(steps)])
    loop = count_dispatched_ops(lambda: train_one_epoch(
        parts.ctx, parts.train_loader, 0, 0, EpochTotals(), None, lambda: False, progress.NoProgress))
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

    def fake_step(ctx, inputs, targets, lr, epoch=0):
        loss = float("nan") if step["n"] >= first_bad else 1.0
        step["n"] += 1
        return torch.tensor(loss) * len(targets), torch.tensor(0)

    monkeypatch.setattr(epoch, "train_step", fake_step)
    with pytest.raises(NonFiniteLoss, match=f"epoch 1, step {first_bad + 1};"):
        train_one_epoch(parts.ctx, parts.train_loader, 0, start_step, EpochTotals(), None, lambda: False,
                        progress.NoProgress)


def test_the_run_eta_counts_every_step_left_in_the_run():
    assert progress.run_eta(steps_done=10, steps_left=100, seconds=20.0) == "3 min"  # 90 steps at 2 s
    assert progress.run_eta(10, 10, 20.0) == "0 s"
    assert progress.run_eta(0, 10, 0.0) == "?"
    # ResNet-18's 200 epochs of 195 steps at ~10 s a step on a 2-core CPU: days, said at once.
    assert progress.run_eta(1, 200 * 195, 10.0) == "4.5 days"
    assert [progress.format_duration(s) for s in (45, 600, 3 * 3600, 50 * 3600)] == ["45 s", "10 min", "3.0 h",
                                                                                      "2.1 days"]


def test_the_progress_line_shows_the_run_eta_from_the_run_and_max_steps():
    config = TrainConfig(model="resnet20", batch_size=8, precision="fp32", epochs=3)
    parts = assembly.build_run(config, synthetic_dataset(n_train=160))  # 20 steps an epoch
    assert run_steps_left(parts, TrainState(epoch=1, step=5, global_step=25)) == 35
    capped = assembly.build_run(TrainConfig(model="resnet20", batch_size=8, precision="fp32", epochs=3,
                                            max_steps=30), synthetic_dataset(n_train=160))
    assert run_steps_left(capped, TrainState(global_step=25)) == 5
    postfixes = []

    class Recording(progress.NoProgress):
        def set_postfix_str(self, text, refresh=True):
            postfixes.append(text)

    train_one_epoch(parts.ctx, parts.train_loader, 0, 0, EpochTotals(), None, lambda: False,
                             Recording, run_steps_left=60)
    assert postfixes and all(" run ETA " in text for text in postfixes)


@pytest.mark.parametrize(("train_batch", "device", "expected"), [
    (32, "cpu", 256), (512, "cpu", 256), (2000, "cpu", 256), (2000, "cuda", 2000), (32, "cuda", 256)])
def test_the_evaluation_batch(train_batch, device, expected):
    """On a GPU the training batch, at least 256; on a CPU 256, where larger ones evaluate slower."""
    assert assembly.evaluation_batch(train_batch, torch.device(device)) == expected
