import json
import os

import pytest
from helpers import read_metrics, run_cli, tiny_train_args

from resnet_cifar.cli import main as cli


@pytest.mark.slow
def test_train_then_eval_end_to_end(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--val-size", "30"))
    assert code == 0, err
    assert {"config.json", "metrics.csv", "last.pt", "best.pt"} <= set(os.listdir(run_dir))
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert set(rows[0]) == {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss",
                            "test_acc", "seconds", "img_per_s", "ema_val_loss", "ema_val_acc", "ema_test_loss",
                            "ema_test_acc", "tta", "epoch_seconds"}
    assert all(float(r["epoch_seconds"]) > float(r["seconds"]) for r in rows)  # evaluation included
    assert rows[0]["tta"] == "none" and rows[0]["ema_test_acc"] == ""
    assert json.loads((run_dir / "config.json").read_text())["model"] == "resnet20"
    assert "epoch 2/2" in out

    output = tmp_path / "eval.json"
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--output", output)
    assert code == 0, err
    report = json.loads(output.read_text())
    assert report["n"] == 100 and 0 <= report["accuracy"] <= 1
    assert set(report["per_class_accuracy"]) == {"airplane", "automobile", "bird", "cat", "deer", "dog",
                                                 "frog", "horse", "ship", "truck"}
    # Eval reproduces the test accuracy that training logged for the same weights.
    assert report["accuracy"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-6)
    assert f"accuracy {100 * report['accuracy']:.2f}%" in out


def test_trains_from_an_image_folder(image_dir, tmp_path, capsys):
    args = tiny_train_args(image_dir, tmp_path / "run", "--epochs", "1", "--batch-size", "8")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert len(read_metrics(tmp_path / "run")) == 1


def test_help_exits_zero(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "--model" in out and "resnet1202" in out


BAD_ARGS = [
    (["--model", "resnet19"], "invalid choice: 'resnet19' (choose from"),
    (["--mode", "serve"], "invalid choice: 'serve'"),
    (["--lr", "0"], "argument --lr: expected a number > 0 and at most 1e6, got '0'"),
    (["--lr", "-1"], "argument --lr: expected a number > 0 and at most 1e6"),
    (["--lr", "nan"], "argument --lr: expected a finite"),
    (["--lr", "inf"], "argument --lr: expected a finite"),
    (["--batch-size", "0"], "argument --batch-size: expected an integer from 1 to 2147483647, got '0'"),
    (["--batch-size", "-5"], "argument --batch-size: expected an integer from 1 to 2147483647"),
    (["--epochs", "0"], "argument --epochs: expected an integer from 1 to 2147483647, got '0'"),
    (["--scheduler", "linear"], "invalid choice: 'linear' (choose from 'plateau', 'step'"),
    (["--precision", "fp8"], "invalid choice: 'fp8'"),
    (["--momentum", "1.5"], "argument --momentum: expected a number in [0, 1)"),
    (["--mode", "eval"], "--mode eval needs --checkpoint PATH"),
    (["--device", "tpu"], "invalid --device 'tpu'; choose auto, cpu, cuda or cuda:N"),
    (["--checkpoint", "x.pt"], "--checkpoint is for --mode eval or --mode predict or --mode export; to continue "
                               "training use --resume PATH"),
    (["--output", "r.json"], "--output is for --mode eval or --mode predict or --mode export or --mode summary"),
    (["--mode", "eval", "--checkpoint", "x.pt", "--top-k", "2"], "--top-k is for --mode predict"),
    (["--mode", "predict", "--checkpoint", "x.pt"], "--mode predict needs image files or folders after the options"),
    (["--mode", "export", "--checkpoint", "x.pt", "--format", "onnx"],
     "--mode export needs --checkpoint PATH, --format {onnx,torchscript,pt2,safetensors} and --output FILE"),
    (["--mode", "export", "--checkpoint", "x.pt", "--format", "tflite", "--output", "m"],
     "argument --format: invalid choice: 'tflite'"),
    (["--mode", "summary"], "--mode summary needs one or more run directories"),
    (["x.png"], "image or run-directory paths are for --mode predict or --mode summary"),
    (["--mode", "eval", "--resume", "x.pt"], "--resume is for --mode train; to evaluate a checkpoint use"),
    (["--sync-bn"], "--sync-bn synchronises BatchNorm across processes; launch with torchrun"),
    (["--dist-timeout", "0"], "argument --dist-timeout: expected a number > 0 and at most 1e6, got '0'"),
    (["--eval-every", "-1"], "argument --eval-every: expected an integer from 0 to 2147483647, got '-1'"),
    (["--mode", "eval", "--checkpoint", "x.pt", "--eval-every", "2"], "--eval-every is for --mode train"),
    (["--mode", "eval", "--checkpoint", "x.pt", "--sync-bn"], "--sync-bn is for --mode train"),
    # Training options are refused by the other modes, not ignored.
    (["--mode", "eval", "--checkpoint", "x.pt", "--lr", "0.1"], "--lr is for --mode train"),
    (["--mode", "eval", "--checkpoint", "x.pt", "--epochs", "5"], "--epochs is for --mode train"),
    (["--mode", "predict", "--checkpoint", "x.pt", "a.png", "--tta", "flip"],
     "--tta is for --mode train or --mode eval"),
    (["--mode", "export", "--checkpoint", "x.pt", "--format", "onnx", "--output", "m", "--device", "cpu"],
     "--device is for --mode train or --mode eval or --mode predict"),
    (["--mode", "summary", "runs/a", "--model", "resnet20"], "--model is for --mode train or --mode eval"),
]


@pytest.mark.parametrize("args,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mode = args[args.index("--mode") + 1] if "--mode" in args else "train"
    # Never a download, in the modes that read data (the others refuse the options).
    offline = [*(["--data-dir", tmp_path / "nothing"] if mode in cli.modes_reading("data_dir") else []),
               *(["--no-download"] if mode in cli.modes_reading("download") else [])]
    code, out, err = run_cli(capsys, *args, *offline)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_batch_size_larger_than_data_set(batches_dir, tmp_path, capsys):
    args = tiny_train_args(batches_dir, tmp_path / "run", "--batch-size", "251")
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--batch-size 251 is larger than the training set (250 images)" in err
    assert not (tmp_path / "run").exists()


def test_cuda_without_gpu_suggests_cpu(batches_dir, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "run", "--device", "cuda"))
    assert code == 2 and "no CUDA GPU is available here; use --device cpu" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_refuses_to_overwrite_a_run(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    before = (run_dir / "last.pt").read_bytes()
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))
    assert code == 2 and "already holds a run; resume it with --resume" in err
    assert (run_dir / "last.pt").read_bytes() == before


def test_unwritable_run_dir(batches_dir, tmp_path, capsys):
    parent = tmp_path / "locked"
    parent.mkdir()
    target = parent / "file-not-dir"
    target.write_text("x")
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, target))
    assert code == 2 and err == f"error: --run-dir {target} is a file, not a folder\n"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, target / "run"))
    assert code == 2 and err == f"error: --run-dir {target / 'run'}: {target} is a file, not a folder\n"
    if os.geteuid() != 0:  # root ignores permission bits
        parent.chmod(0o500)
        code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, parent / "run"))
        parent.chmod(0o700)
        assert code == 2 and err == f"error: --run-dir {parent / 'run'}: the folder {parent} is not writable\n"


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`python main.py --mode eval ... | head -3`: the reader leaves, the program stops without a traceback."""
    from resnet_cifar.cli import main as cli
    def reader_gone(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "summary_command", reader_gone)
    code, _, err = run_cli(capsys, "--mode", "summary", "runs/x")
    assert code == 128 + 13 and err == ""  # as a process killed by SIGPIPE


@pytest.mark.slow
def test_the_program_ends_without_teardown_but_with_its_output_and_exit_code():
    """main.py ends with os._exit (the interpreter's teardown took ~1.5 s): what the buffered
    streams hold still comes out, and the exit code is main()'s."""
    import subprocess
    import sys

    from helpers import ROOT

    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # pipes: block-buffered
    run = [sys.executable, "main.py"]
    from resnet_cifar.recipes import describe_recipes

    helped = subprocess.run([*run, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    # Everything up to the help's last line (the last recipe's) comes out.
    assert helped.returncode == 0 and helped.stdout.endswith(describe_recipes().splitlines()[-1] + "\n")
    failed = subprocess.run([*run, "--mode", "eval"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1 and failed.stderr.startswith("error: ")


def test_every_option_is_read_by_some_mode():
    dests = set(vars(cli.parse_args([])))
    assert all(cli.modes_reading(dest) for dest in dests)
    assert set().union(*cli.MODE_READS.values()) <= dests
