"""--mode summary: a line per run and mean ± std over runs that differ only by seed."""
import csv
import math

import pytest
from helpers import read_metrics, run_cli, tiny_train_args


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
    assert code == 2 and err == (f"error: no run found ({tmp_path}: not a run folder (no config.json)); a run "
                                 f"folder holds config.json, a --seeds folder seed<N>/ runs\n")
