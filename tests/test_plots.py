"""The run's curves: drawn, kept across a resume, on the right lr axis, redrawn at most every interval."""
import math

import pytest
from helpers import png_ok, run_cli, tiny_train_args

from resnet_cifar.results.plots import lr_axis_scale, plot_curves


@pytest.mark.slow
def test_curves_survive_a_resume(batches_dir, tmp_path, capsys, monkeypatch):
    drawn = []
    from resnet_cifar.results import plots
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
    from resnet_cifar.results import plots
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
