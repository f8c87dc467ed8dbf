"""The evaluation report against hand-computed values, its files, curves, TensorBoard and summary."""
import contextlib
import csv
import io
import json
import math

import pytest
import torch
from PIL import Image

import main as cli
import metrics
from metrics import Predictions, build_report
from plots import lr_axis_scale, plot_curves

from conftest import write_batches
from helpers import read_metrics, run_cli, tiny_train_args

CLASSES = ["a", "b", "c"]


def tiny_case():
    """Six images of three classes; predictions (argmax) 0,0,1,1,2,0 for labels 0,0,0,1,2,2."""
    logits = torch.tensor([[4.0, 0, 0], [2, 1, 0], [0, 3, 0], [0, 2, 1], [0, 0, 1], [5, 0, 4]])
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    return Predictions(logits, labels)


def test_confusion_matrix_top5_and_accuracy_by_hand():
    result = build_report(tiny_case(), CLASSES)
    assert result["confusion_matrix"]["counts"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["top5_accuracy"] == 1.0  # k is capped at the number of classes
    assert metrics.top_k_accuracy(tiny_case().logits, tiny_case().labels, 2) == pytest.approx(6 / 6)
    assert metrics.top_k_accuracy(tiny_case().logits, tiny_case().labels, 1) == pytest.approx(4 / 6)
    assert result["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.5})
    expected_loss = torch.nn.functional.cross_entropy(tiny_case().logits, tiny_case().labels).item()
    assert result["loss"] == pytest.approx(expected_loss)


def test_most_confused_pairs_by_hand():
    confusion = torch.tensor([[5, 3, 1], [0, 7, 3], [4, 0, 2]])
    pairs = metrics.most_confused_pairs(confusion, CLASSES, count=3)
    # 4 (c->a), then the two 3s in class order: a->b before b->c.
    assert pairs == [{"true": "c", "predicted": "a", "count": 4}, {"true": "a", "predicted": "b", "count": 3},
                     {"true": "b", "predicted": "c", "count": 3}]


def test_ece_by_hand():
    # Confidences 0.95 (right), 0.95 (wrong), 0.55 (right), 0.45 (wrong): bins (0.9333, 1], (0.5333, 0.6],
    # (0.4, 0.4667]: |0.5 - 0.95| * 2/4 + |1 - 0.55| * 1/4 + |0 - 0.45| * 1/4 = 0.225 + 0.1125 + 0.1125.
    confidence = torch.tensor([0.95, 0.95, 0.55, 0.45])
    correct = torch.tensor([True, False, True, False])
    bins = metrics.calibration_bins(confidence, correct)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4
    assert metrics.expected_calibration_error(bins, 4) == pytest.approx(0.45)
    assert bins[14]["count"] == 2 and bins[14]["accuracy"] == 0.5


def test_ece_of_the_built_report_matches_its_bins():
    result = build_report(tiny_case(), CLASSES)
    probabilities = tiny_case().logits.softmax(1)
    confidence, predicted = probabilities.max(1)
    edges = [i / 15 for i in range(16)]
    total = 0.0
    for low, high in zip(edges, edges[1:], strict=False):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            gap = abs((predicted[members] == tiny_case().labels[members]).float().mean() - confidence[members].mean())
            total += members.float().mean().item() * gap.item()
    assert result["ece"] == pytest.approx(total)


def test_text_report_lists_every_part():
    text = metrics.format_report(build_report(tiny_case(), CLASSES))
    assert "top-1 66.67%  top-5 100.00%" in text and "ECE" in text
    assert "confusion matrix (rows true, columns predicted):" in text
    assert "most confused: a -> b (1), c -> a (1)" in text


def png_ok(path) -> bool:
    with Image.open(path) as image:
        image.load()
        return image.format == "PNG" and image.size[0] > 100


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run with --val-size, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("finished")
    write_batches(root / "data" / "cifar-10-batches-py")
    run_dir = root / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([str(a) for a in tiny_train_args(root / "data", run_dir, "--val-size", "30")]) == 0
    return run_dir


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
    assert "top-5" in out and "most confused" in out or "confusion matrix" in out
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", finished_run / "last.pt", "--split", "val",
                             "--output", output)
    assert code == 0, err
    assert json.loads(output.read_text())["n"] == 30 and "on 30 val images" in out
    # The validation accuracy training logged for the same weights.
    assert json.loads(output.read_text())["accuracy"] == pytest.approx(float(read_metrics(finished_run)[-1]["val_acc"]),
                                                                       abs=1e-5)


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


def test_phase_clock_and_the_time_line():
    import timings

    now = [100.0]
    clock = timings.PhaseClock(clock=lambda: now[0])
    with clock.phase("data"):
        now[0] += 1.5
    clock.add("training", 30.0)
    with clock.phase("training"):
        now[0] += 2.0
    now[0] += 40.0  # 30 s of training were added without the clock moving: other = 43.5 - 33.5
    summary = clock.summary(before_run_s=4.25)
    assert (summary["data_s"], summary["training_s"], summary["report_s"]) == (1.5, 32.0, 0.0)
    assert (summary["other_s"], summary["run_s"], summary["before_run_s"]) == (10.0, 43.5, 4.25)
    assert timings.format_timings(summary) == (
        "time: 47.8 s (start-up 4.2 s, then data 1.5, setup 0.0, training 32.0, evaluation 0.0, checkpoints 0.0, "
        "curves 0.0, report 0.0, other 10.0)")
    assert timings.format_timings({**summary, "before_run_s": None}).startswith("time: 43.5 s (data 1.5, ")


def test_process_age_reads_proc_and_is_none_without_it(tmp_path):
    import os

    import timings

    ticks = os.sysconf("SC_CLK_TCK")
    (tmp_path / "self").mkdir()
    fields = ["S"] + ["0"] * 18 + [str(50 * ticks)] + ["0"] * 30  # field 22 (starttime): 50 s after boot
    (tmp_path / "self" / "stat").write_text("123 (a name) with) spaces) " + " ".join(fields))
    (tmp_path / "uptime").write_text("80.00 10.00\n")
    assert timings.process_age_s(tmp_path) == pytest.approx(30.0)
    assert timings.process_age_s(tmp_path / "missing") is None


@pytest.mark.slow
def test_curves_survive_a_resume(batches_dir, tmp_path, capsys, monkeypatch):
    drawn = []
    import plots

    monkeypatch.setattr(plots, "plot_curves", lambda rows, path: drawn.append(len(rows)) or plot_curves(rows, path))
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--epochs", "1"))[0] == 0
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "3", "--quiet")
    assert code == 0, err
    assert drawn == [1, 2, 3]  # the resumed epochs draw the earlier ones too
    assert png_ok(run_dir / "curves.png")


def test_lr_axis_is_logarithmic_only_for_step_schedules_spanning_a_decade():
    paper = [0.1] * 82 + [0.01] * 41 + [0.001] * 42
    assert lr_axis_scale(paper) == "log"
    assert lr_axis_scale([0.1] * 10 + [0.02] * 5) == "linear"  # less than a decade
    assert lr_axis_scale([0.1 * 0.1 ** (e // 30) for e in range(300)]) == "log"  # --scheduler step: ten values
    assert lr_axis_scale([0.1, 0.1, 0.01, 0.01]) == "log"
    assert lr_axis_scale([0.1, 0.05, 0.02, 0.01, 0.005]) == "linear"  # a short decay, not steps
    cosine = [0.05 * (1 + math.cos(math.pi * e / 200)) for e in range(1, 200)]  # ends near, not at, 0
    assert lr_axis_scale(cosine) == "linear"
    assert lr_axis_scale([0.08, 0.24, 0.4, 0.2, 0.0]) == "linear"  # triangular: ends at 0
    assert lr_axis_scale([]) == "linear"


def test_curves_are_redrawn_at_most_every_interval_unless_forced(tmp_path, monkeypatch):
    import plots

    drawn, now, rows = [], [0.0], []
    monkeypatch.setattr(plots, "plot_curves", lambda rows, path: drawn.append(len(rows)))
    curves = plots.CurvesPlot(tmp_path / "curves.png", lambda: list(rows), min_interval_s=30, clock=lambda: now[0])
    assert not curves.update()  # nothing to draw yet
    rows.append({"epoch": 1})
    assert curves.update()  # the first epoch always draws
    now[0] = 29.9
    rows.append({"epoch": 2})
    assert not curves.update()
    rows.append({"epoch": 3})
    assert curves.update(force=True)  # the last epoch, a stop
    now[0] = 59.8
    rows.append({"epoch": 4})
    assert not curves.update()
    now[0] = 59.9
    rows.append({"epoch": 5})
    assert curves.update()
    assert drawn == [1, 3, 5]


@pytest.mark.slow
def test_tensorboard_writes_events_with_the_epoch_scalars(batches_dir, tmp_path, capsys):
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


@pytest.mark.slow
def test_summary_gives_mean_and_std_over_seeds(batches_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, root, "--epochs", "1", "--seeds", "0", "1", "2"))
    assert code == 0, err
    other = tmp_path / "other"
    assert run_cli(capsys, *tiny_train_args(batches_dir, other, "--epochs", "1", "--lr", "0.01"))[0] == 0
    output = tmp_path / "summary.csv"
    code, out, err = run_cli(capsys, "--mode", "summary", *(root / f"seed{s}" for s in (0, 1, 2)), other,
                             "--output", output)
    assert code == 0, err
    finals = [float(read_metrics(root / f"seed{s}")[-1]["test_acc"]) for s in (0, 1, 2)]
    mean = sum(finals) / 3
    std = math.sqrt(sum((a - mean) ** 2 for a in finals) / 2)
    lines = out.splitlines()
    assert len(lines) == 4 + 1 + 1  # four runs, one seed group (the lr-0.01 run is another experiment), "wrote"
    assert f"over 3 seeds (tta none): {100 * mean:.2f}% ± {100 * std:.2f}" in lines[4]
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == [0, 1, 2, 0] and rows[0]["recipe"] == "seed"
    walls = [sum(float(r["epoch_seconds"]) for r in read_metrics(root / f"seed{s}")) for s in (0, 1, 2)]
    assert [float(r["wall_seconds"]) for r in rows[:3]] == pytest.approx(walls, abs=0.06)
    code, _, err = run_cli(capsys, "--mode", "summary", tmp_path)
    assert code == 2 and err == f"error: {tmp_path} is not a run directory (no config.json)\n"


@pytest.mark.slow
def test_the_final_report_reuses_the_last_epochs_logits(batches_dir, tmp_path, capsys, monkeypatch):
    """last.pt holds the weights the last epoch evaluated: its report is built from that pass, and
    it is the report --mode eval writes for last.pt (best.pt, other weights, is evaluated anew)."""
    import epoch_results

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
                                                      "--val-size", "30", "--scheduler", "cosine"))
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
