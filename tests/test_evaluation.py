"""The evaluation report of a checkpoint and of a finished run: its files, its split, its reuse of
the last epoch's logits, and the epochs --eval-every evaluates."""
import contextlib
import csv
import io
import json

import pytest
from helpers import png_ok, read_metrics, run_cli, tiny_train_args, write_batches

from resnet_cifar.cli import main as cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run with --val-size, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("finished")
    write_batches(root / "data" / "cifar-10-batches-py")
    run_dir = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([str(a) for a in tiny_train_args(root / "data", run_dir, "--val-size", "30")]) == 0
    return run_dir


@pytest.mark.slow
def test_eval_report_dir_json_and_split(finished_run, tmp_path, capsys):
    report_dir, output = tmp_path / "report", tmp_path / "eval.json"
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", finished_run / "last.pt",
                             "--report-dir", report_dir, "--output", output)
    assert code == 0, err
    for name in ("confusion.png", "calibration.png", "mistakes.png"):
        assert png_ok(report_dir / name)
    saved = json.loads(output.read_text())
    assert {"accuracy", "top5_accuracy", "loss", "per_class_accuracy", "confusion_matrix", "most_confused", "ece",
            "calibration_bins", "n", "checkpoint", "model", "epoch", "tta", "weights", "split"} <= set(saved)
    assert sum(map(sum, saved["confusion_matrix"]["counts"])) == saved["n"] == 100
    assert saved == json.loads((report_dir / "report.json").read_text())
    with open(report_dir / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and sum(int(r["images"]) for r in rows) == 100
    # Ten classes: top-1 and top-5, the whole matrix and the most confused pairs on the terminal.
    assert "top-5" in out and "confusion matrix (rows true, columns predicted):" in out and "most confused" in out
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", finished_run / "last.pt", "--split", "val",
                             "--output", output)
    assert code == 0, err
    assert json.loads(output.read_text())["n"] == 30 and "on 30 val images" in out
    # The validation accuracy training logged for the same weights.
    assert json.loads(output.read_text())["accuracy"] == pytest.approx(float(read_metrics(finished_run)[-1]["val_acc"]),
                                                                       abs=1e-5)


@pytest.mark.slow
def test_val_split_needs_a_run_with_val_size(batches_dir, tmp_path, capsys):
    assert run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "run", "--epochs", "1"))[0] == 0
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", tmp_path / "run" / "last.pt", "--split", "val")
    assert code == 2
    assert err == ("error: --split val: this run was trained without --val-size, so it has no validation images; "
                   "use --split test\n")


def test_a_finished_run_explains_itself(finished_run):
    assert png_ok(finished_run / "curves.png")
    for folder in ("report", "report-best"):
        for name in ("confusion.png", "calibration.png", "mistakes.png"):
            assert png_ok(finished_run / folder / name)
        assert (finished_run / folder / "per_class.csv").exists()
    saved = json.loads((finished_run / "report" / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(float(read_metrics(finished_run)[-1]["test_acc"]))


def test_a_finished_run_says_where_its_time_went(finished_run):
    timings = json.loads((finished_run / "timings.json").read_text())
    rows = read_metrics(finished_run)
    assert timings["training_s"] == pytest.approx(sum(float(row["seconds"]) for row in rows), abs=0.01)
    evaluated = sum(float(row["epoch_seconds"]) - float(row["seconds"]) for row in rows)
    assert timings["evaluation_s"] >= evaluated - 0.01 > 0
    for phase in ("data", "setup", "checkpoints", "curves", "report"):  # the report evaluates best.pt anew
        assert timings[f"{phase}_s"] > 0, phase
    phases = sum(value for key, value in timings.items() if key not in ("before_run_s", "run_s"))
    assert phases == pytest.approx(timings["run_s"], abs=0.01)
    assert timings["before_run_s"] > 0  # this (pytest's) process's age when the run began, on Linux


















@pytest.mark.slow
def test_the_final_report_reuses_the_last_epochs_logits(batches_dir, tmp_path, capsys, monkeypatch):
    """last.pt holds the weights the last epoch evaluated: its report is built from that pass, and
    it is the report --mode eval writes for last.pt (best.pt, other weights, is evaluated anew)."""
    from resnet_cifar.training import epoch_results
    evaluated = []
    real = epoch_results.evaluate_checkpoint
    monkeypatch.setattr(epoch_results, "evaluate_checkpoint",
                        lambda config, **kw: evaluated.append(config.checkpoint) or real(config, **kw))
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--tta", "flip"))
    assert code == 0, err
    assert evaluated == []
    saved = json.loads((run_dir / "report" / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(float(read_metrics(run_dir)[-1]["test_acc"]), abs=1e-6)
    assert saved["loss"] == pytest.approx(float(read_metrics(run_dir)[-1]["test_loss"]), rel=1e-4)
    output = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--tta", "flip",
                           "--precision", "fp32", "--output", output)
    assert code == 0, err
    fresh = json.loads(output.read_text())
    assert set(saved) == set(fresh)
    for key in ("checkpoint", "model", "epoch", "weights", "tta", "split", "n", "confusion_matrix", "most_confused",
                "per_class_accuracy", "precision", "device"):
        assert saved[key] == fresh[key], key
    assert saved["ece"] == pytest.approx(fresh["ece"], abs=1e-5)
    assert png_ok(run_dir / "report" / "mistakes.png")

    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "with-val", "--val-size", "30"))
    assert code == 0, err
    assert evaluated == [str(tmp_path / "with-val" / "best.pt")]


@pytest.mark.slow
def test_eval_every_skips_the_evaluations_between(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "3", "--eval-every", "2",
                                                      "--val-size", "30", "--scheduler", "step"))
    assert code == 0, err
    rows = read_metrics(run_dir)
    assert [bool(r["test_acc"]) for r in rows] == [False, True, True]  # epoch 2, and the last
    assert [bool(r["val_acc"]) for r in rows] == [False, True, True]
    assert "100 test images, evaluated every 2 epochs and after the last, run dir" in out
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert "test loss" not in lines[0] and "test loss" in lines[1] and "test loss" in lines[2]
    assert png_ok(run_dir / "curves.png")
    saved = json.loads((run_dir / "report" / "report.json").read_text())
    assert saved["accuracy"] == pytest.approx(float(rows[-1]["test_acc"]), abs=1e-6)
    # A resume may change it: the run's weights do not depend on it.
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "4", "--eval-every", "1", "--quiet")
    assert code == 0, err
    assert [bool(r["test_acc"]) for r in read_metrics(run_dir)] == [False, True, True, True]


def test_eval_every_refuses_a_plateau_that_watches_validation(batches_dir, tmp_path, capsys):
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, tmp_path / "run", "--eval-every", "2",
                                                    "--val-size", "30", "--scheduler", "plateau"))
    assert code == 2
    assert err == ("error: --eval-every 2: --scheduler plateau with --val-size watches the validation loss after "
                   "every epoch; use --eval-every 1 or another --scheduler (step, multistep, cosine, onecycle, "
                   "triangular)\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_eval_of_last_pt_reports_what_the_run_reported(batches_dir, tmp_path, capsys):
    """Without --tta, eval uses the run's TTA (and the precision it trained in): the figures equal
    the final epoch's."""
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1", "--tta", "flip"))
    assert code == 0, err
    done = next(line for line in out.splitlines() if line.startswith("done: test accuracy"))
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt")
    assert code == 0, err
    first = out.splitlines()[0]
    assert "(raw weights, tta flip, the run's)" in first
    assert done.split()[3] == first.split("accuracy ")[1].split(",")[0]  # e.g. "37.00%"
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--tta", "none")
    assert code == 0 and "(raw weights, tta none) on" in out.splitlines()[0]
