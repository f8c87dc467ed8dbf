"""What a resume may change: typed options, the run's length, the precision it trained in."""
import json
from dataclasses import replace

import pytest
import torch
from helpers import run_cli, tiny_train_args, write_batches

from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.runfiles.checkpoints import load_checkpoint, save_checkpoint


@pytest.mark.slow
def test_resume_rules(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    last = run_dir / "last.pt"
    code, _, err = run_cli(capsys, "--resume", tmp_path / "missing.pt")
    assert code == 2 and "does not exist" in err
    code, out, _ = run_cli(capsys, "--resume", last)
    assert code == 0 and "already finished all 1 epochs" in out
    code, _, err = run_cli(capsys, "--resume", last, "--model", "resnet32")
    assert code == 2 and "--model resnet32 conflicts with the checkpoint's model resnet20" in err
    code, _, err = run_cli(capsys, "--resume", last, "--batch-size", "16", "--epochs", "2")
    assert code == 2 and "--batch-size 16 conflicts with the checkpoint's batch_size 32" in err
    other = write_batches(tmp_path / "other" / "cifar-10-batches-py", n_train=300)
    code, _, err = run_cli(capsys, "--resume", last, "--epochs", "2", "--data-dir", other.parent)
    assert code == 2 and "n_train is 300 in --data-dir but 250 in the checkpoint" in err
    before = last.read_bytes()
    code, _, err = run_cli(capsys, "--resume", last, "--epochs", "2", "--quiet")
    assert code == 0, err
    assert last.read_bytes() != before and load_checkpoint(last)["epoch"] == 2
    # The machine's options may change: a run moved to another machine picks its own thread count.
    threads = torch.get_num_threads()
    try:
        code, _, err = run_cli(capsys, "--resume", last, "--epochs", "3", "--threads", "1", "--quiet")
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    assert load_checkpoint(last)["config"]["threads"] == 1 and load_checkpoint(last)["epoch"] == 3


def test_a_resume_keeps_the_precision_the_run_trained_in(batches_dir, tmp_path, capsys, monkeypatch):
    """Another machine of the same kind may choose another `auto` precision or layout (a CPU with
    native bf16 chooses bf16 + channels_last): the resumed run goes on in the one it trained in,
    unless --precision/--channels-last is typed."""
    from resnet_cifar.training import precision_choice
    from resnet_cifar.utils import devices
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)  # as on a CPU without AVX512-BF16
    # auto measures: here fp32 NCHW is the fastest, as it was on such a CPU for this rule
    speeds = {("fp32", False): 300.0, ("fp32", True): 250.0, ("bf16", False): 30.0, ("bf16", True): 25.0}
    monkeypatch.setattr(precision_choice, "img_per_s", lambda device, model, batch, classes, precision, layout,
                        slowest=None, **kwargs: speeds[(precision, layout)])
    monkeypatch.setenv(precision_choice.CACHE_VARIABLE, str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    args = [a for a in tiny_train_args(batches_dir, run_dir, "--max-steps", "1") if a not in ("--precision", "fp32")]
    assert run_cli(capsys, *args)[0] == 0
    last = run_dir / "last.pt"
    payload = load_checkpoint(last)
    assert payload["config"]["precision"] == "auto"
    assert payload["resolved"] == {"device_type": "cpu", "precision": "fp32", "channels_last": False}
    # As if trained where auto chose channels_last (fp32 kept: bf16 would be slow on this CPU).
    payload["resolved"]["channels_last"] = True
    save_checkpoint(last, payload)
    code, out, err = run_cli(capsys, "--resume", last, "--max-steps", "2", "--quiet")
    assert code == 0, err
    assert "resuming in the run's fp32 + channels_last (auto would choose fp32 + NCHW here;" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["resolved_precision"], config["resolved_channels_last"]) == ("fp32", True)
    code, out, err = run_cli(capsys, "--resume", last, "--max-steps", "3", "--quiet", "--no-channels-last")
    assert code == 0, err
    assert "resuming in the run's" not in out
    assert json.loads((run_dir / "config.json").read_text())["resolved_channels_last"] is False


def test_a_resume_on_another_device_kind_chooses_anew(monkeypatch):
    from resnet_cifar.training.resume import keep_trained_precision
    from resnet_cifar.utils import devices

    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)  # auto: fp32 NCHW, as on an AVX2 CPU
    config = TrainConfig(device="cpu")
    trained_on_gpu = {"resolved": {"device_type": "cuda", "precision": "bf16", "channels_last": True}}
    assert keep_trained_precision(config, trained_on_gpu, set()) == (config, "")
    assert keep_trained_precision(config, {}, set()) == (config, "")  # a checkpoint from before the record
    same = {"resolved": {"device_type": "cpu", "precision": "fp32", "channels_last": False}}
    # what auto's rule chooses here anyway: pinned, so that a measuring auto cannot choose anew, and silent
    assert keep_trained_precision(config, same, set()) == (replace(config, precision="fp32", channels_last=False), "")
    # a typed --precision wins; the layout the run trained in is kept, and the line names both as they will be
    bf16_nhwc = {"resolved": {"device_type": "cpu", "precision": "bf16", "channels_last": True}}
    kept, line = keep_trained_precision(TrainConfig(device="cpu", precision="fp32"), bf16_nhwc, {"precision"})
    assert (kept.precision, kept.channels_last) == ("fp32", True)
    assert line.startswith("resuming in the run's fp32 + channels_last (auto would choose fp32 + NCHW here;")


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "triangular"])
def test_a_length_shaped_schedule_refuses_another_length_on_resume(scheduler):
    from resnet_cifar.training.resume import resume_config

    saved = TrainConfig(scheduler=scheduler, epochs=10)
    with pytest.raises(UserError, match=f"^--epochs 20: this run's {scheduler} schedule is laid out over its 10 "
                                        "epochs, .*plateau, step, multistep runs"):
        resume_config(saved, TrainConfig(scheduler=scheduler, epochs=20), {"epochs"})
    iterations = TrainConfig(scheduler=scheduler, epochs=3, iterations=1000)
    with pytest.raises(UserError, match=f"^--iterations 2000: this run's {scheduler} schedule"):
        resume_config(iterations, TrainConfig(scheduler=scheduler, iterations=2000), {"iterations"})
    # The same length, and the machine's options, may be given.
    resumed = resume_config(saved, TrainConfig(scheduler=scheduler, epochs=10, threads=1, device="cpu"),
                            {"epochs", "threads", "device"})
    assert (resumed.epochs, resumed.threads, resumed.device) == (10, 1, "cpu")


@pytest.mark.parametrize("scheduler", ["plateau", "step", "multistep"])
def test_other_schedules_may_change_their_length_on_resume(scheduler):
    from resnet_cifar.training.resume import resume_config

    resumed = resume_config(TrainConfig(scheduler=scheduler, epochs=10), TrainConfig(epochs=20), {"epochs"})
    assert resumed.epochs == 20 and resumed.scheduler == scheduler


@pytest.mark.slow
def test_resuming_a_cosine_run_with_another_length_is_one_line_and_keeps_the_checkpoint(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1", "--scheduler", "cosine"))[0] == 0
    before = (run_dir / "last.pt").read_bytes()
    code, out, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "3")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: --epochs 3: this run's cosine schedule is laid out over its 1 epochs")
    assert (run_dir / "last.pt").read_bytes() == before
    code, out, _ = run_cli(capsys, "--resume", run_dir / "last.pt")
    assert code == 0 and "(start a new run to train longer)" in out
