"""--tensorboard: the event files, and a one-line refusal without the package."""

import pytest
from helpers import read_metrics, run_cli, skip_unless_installed, tiny_train_args


@pytest.mark.slow
def test_tensorboard_writes_events_with_the_epoch_scalars(batches_dir, tmp_path, capsys):
    skip_unless_installed("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--tensorboard"))
    assert code == 0, err
    events = EventAccumulator(str(run_dir)).Reload()
    assert [e.step for e in events.Scalars("accuracy/test")] == [1, 2]
    test_accs = [float(r["test_acc"]) for r in read_metrics(run_dir)]
    assert [e.value for e in events.Scalars("accuracy/test")] == pytest.approx(test_accs)
    assert {"loss/train", "lr", "img_per_s"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["confusion"]


def test_tensorboard_missing_is_one_line(batches_dir, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name == "tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "run", "--tensorboard"))
    assert code == 2
    assert err == ("error: --tensorboard needs the tensorboard package: pip install tensorboard "
                   "(or drop --tensorboard)\n")
    assert not (tmp_path / "run").exists()
