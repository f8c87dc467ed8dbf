"""The benchmarks time what they say they time (pytest.ini puts bench/ on the import path)."""
from __future__ import annotations

import argparse
import subprocess

import pytest

from resnet_cifar.data import loader
from resnet_cifar.recipes.routes import ROUTES
from resnet_cifar.training import epoch as training


@pytest.fixture
def throughput():
    import throughput as module

    return module


@pytest.mark.slow
def test_throughput_times_exactly_the_steps_it_counts_across_epoch_ends(batches_dir, monkeypatch, throughput):
    # 250 train images at batch 64: 3 steps an epoch, fewer than the 5 steps a round asks for, so
    # the real path must go on into the next epoch instead of stopping short.
    counted = {"real": 0, "compute": 0, "loader": 0}
    real_step, original_epoch = training.train_step, loader.BatchLoader.epoch

    def counting_step(variant):
        def step(*args, **kwargs):
            counted[variant] += 1
            return real_step(*args, **kwargs)
        return step

    def count_batches(self, epoch=0, start_step=0):
        for batch in original_epoch(self, epoch, start_step):
            if self.train and epoch >= 20_000:  # bench/throughput.py's loader-only epochs
                counted["loader"] += 1
            yield batch

    monkeypatch.setattr(training, "train_step", counting_step("real"))  # train_one_epoch's step
    monkeypatch.setattr(throughput, "train_step", counting_step("compute"))  # the compute-only loop
    monkeypatch.setattr(loader.BatchLoader, "epoch", count_batches)
    report = throughput.main(["--model", "resnet20", "--data-dir", str(batches_dir), "--device", "cpu",
                              "--precision", "fp32", "--batch-size", "64", "--steps", "5", "--rounds", "2",
                              "--warmup", "1", "--no-classic", "--no-eval"])
    # the loader is timed over one whole epoch (3 steps) a round
    assert counted == {"real": 1 + 2 * 5, "compute": 1 + 2 * 5, "loader": 1 + 2 * 3}
    assert set(report["img_per_s"]) == {"train", "compute", "loader"}
    assert report["eval_img_per_s"] is None
    assert len(report["ratio_train_over_compute_per_round"]) == 2


@pytest.mark.slow
def test_feature_cost_measures_every_variant(batches_dir):
    import feature_cost

    report = feature_cost.main(["--data-dir", str(batches_dir), "--batch-size", "32", "--images", "64",
                                "--steps", "1", "--eval-images", "50", "--rounds", "1", "--device", "cpu"])
    assert set(report["loader_img_per_s"]) == set(feature_cost.LOADER_VARIANTS)
    assert set(report["train_img_per_s"]) == {"plain", "ema 0.999"}
    assert set(report["eval_img_per_s"]) == {"none", "flip", "flip-translate"}
    assert all(v > 0 for part in ("loader_img_per_s", "train_img_per_s", "eval_img_per_s")
               for v in report[part].values())


@pytest.mark.parametrize("precision", [[], ["--precision", "bf16", "--channels-last"]], ids=["fp32", "bf16"])
def test_eval_batch_measures_every_batch_and_tta(precision):
    import eval_batch

    report = eval_batch.main(["--images", "48", "--batches", "16", "48", "--eval-batch", "24",
                              "--tta", "none", "flip", "--rounds", "1", *precision])
    assert (report["precision"], report["channels_last"]) == (("bf16", True) if precision else ("fp32", False))
    assert set(report["forward_img_per_s"]) == {"forward batch 16", "forward batch 48"}
    assert set(report["eval_img_per_s"]) == {"evaluate batch 24, tta none", "evaluate batch 24, tta flip"}
    assert report["images"] == 48 and all(v > 0 for v in report["eval_img_per_s"].values())


def test_the_scaling_model_follows_the_ring_all_reduce_formula():
    import scaling_model as model

    link = model.Link("test", bytes_per_s=1e9, hop_latency_s=0.0)
    # 2(N-1)/N of the bytes through each GPU's link: N=2 moves all of them, N=4 one and a half times.
    assert model.allreduce_seconds(10**9, 2, link) == pytest.approx(1.0)
    assert model.allreduce_seconds(10**9, 4, link) == pytest.approx(1.5)
    assert model.allreduce_seconds(10**9, 1, link) == 0.0
    assert model.gradient_bytes("resnet18") == 4 * 11_173_962
    # A 9 ms step with a 1 ms all-reduce is 90% efficient without overlap; hidden entirely behind
    # the backward pass (6 ms) it costs nothing.
    assert model.efficiency(0.009, 0.001, overlap=False) == pytest.approx(0.9)
    assert model.efficiency(0.009, 0.001, overlap=True) == 1.0
    # No measured batch reaches 90% here (1 ms steps, 1 ms all-reduce): extrapolated at 1,000 img/s.
    assert model.batch_for(0.9, 2, 0.001, {1: 1000}, overlap=False) == "~18"
    assert model.batch_for(0.9, 2, 0.001, {100: 1000}, overlap=False) == "200"


def test_time_to_accuracy_takes_the_smallest_budget_whose_mean_reaches_each_target():
    import time_to_accuracy as tta

    def run(epochs, seed, wall, train, acc):
        return {"epochs": epochs, "seed": seed, "wall_s": wall, "train_s": train, "epochs_done": epochs,
                "test_acc": acc, "tta": "flip"}

    rows = [run(26, 0, 60.0, 29.0, 0.9114), run(26, 1, 70.0, 33.0, 0.9088), run(18, 0, 45.0, 21.0, 0.9006),
            run(80, 0, 152.0, 86.0, 0.9264),
            {"epochs": 12, "seed": 0, "skipped": "predicted 80 s would end after the 343 s deadline"}]
    table = tta.summarise(rows, [0.90, 0.91, 0.92, 0.94])
    assert "| 26 | 0 1 | 91.01% ± 0.18 (90.88–91.14) | flip | 31.0 | 65.0 |" in table
    assert "- time to 90%: 45.0 s (18 epochs, 90.06%)" in table
    assert "- time to 91%: 65.0 s (26 epochs, 91.01%)" in table  # the mean of the seeds, not the best seed
    assert "- time to 92%: 152.0 s (80 epochs, 92.64%)" in table
    assert "- time to 94%: not reached (best: 92.64% at 80 epochs)" in table
    assert "- skipped 12 epochs, seed 0" in table
    assert "| epochs | runs | before run |" not in table  # no run kept timings.json
    phases = dict(before_run_s=3.0, data_s=1.0, setup_s=2.0, training_s=29.0, evaluation_s=0.5, checkpoints_s=0.2,
                  curves_s=0.8, report_s=1.5, other_s=0.0)
    timed = [{**rows[0], "timings": phases}, {**rows[1], "timings": {**phases, "training_s": 33.0}}]
    table = tta.summarise(timed, [0.91])
    assert "| epochs | runs | before run | data | setup | training | evaluation | checkpoints | curves | report " \
           "| other | exit | wall |" in table
    # wall 60 and 70 s: mean 65; phases sum to 38 and 42, mean 40: 25 s outside them
    assert "| 26 | 2 | 3.0 | 1.0 | 2.0 | 31.0 | 0.5 | 0.2 | 0.8 | 1.5 | 0.0 | 25.0 | 65.0 |" in table
    # the next run's wall: the largest fixed cost seen plus the slowest seconds an epoch
    assert tta.predicted_wall(tta.Plan(10, 0), rows[:3]) == pytest.approx(37.0 + 10 * 33.0 / 26)
    assert tta.predicted_wall(tta.Plan(10, 0), []) is None


def test_time_to_accuracy_refuses_a_malformed_plan():
    import argparse

    import time_to_accuracy as tta

    assert tta.parse_plan("26:2") == tta.Plan(26, 2)
    for text in ("26", "a:1", "0:1", "26:-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            tta.parse_plan(text)


@pytest.mark.slow
def test_time_to_accuracy_times_whole_commands(batches_dir, tmp_path):
    import time_to_accuracy as tta

    rows = tta.main(["--data-dir", str(batches_dir), "--out", str(tmp_path), "--model", "resnet20",
                     "--runs", "1:0", "--warmup-steps", "0", "--",
                     "--device", "cpu", "--precision", "fp32", "--batch-size", "64", "--tta", "none"])
    assert len(rows) == 1 and rows[0]["exit_code"] == 0 and rows[0]["epochs_done"] == 1
    assert 0 < rows[0]["train_s"] < rows[0]["wall_s"] and 0 <= rows[0]["test_acc"] <= 1
    assert rows[0]["timings"]["training_s"] == pytest.approx(rows[0]["train_s"], abs=0.01)
    assert "| 1 | 0 |" in (tmp_path / "table.md").read_text()
    log = (tmp_path / "runs.log").read_text()
    assert "--recipe fast --epochs 1 --seed 0" in log and "\ntime: " in log  # the run's last line


def test_ablation_compares_each_variant_with_the_first():
    import ablation

    def run(variant, seed, acc, no_tta=None, ema=None, options=()):
        return {"variant": variant, "options": list(options), "seed": seed, "test_acc": acc, "tta": "flip-translate",
                "test_acc_no_tta": no_tta, "ema_test_acc": ema, "train_s": 12.0, "wall_s": 25.0}

    rows = [run("fast", 0, 0.8800, 0.8700), run("no Cutout", 0, 0.8750, 0.8640, options=["--cutout", "0"]),
            run("fast", 1, 0.8820, 0.8710), run("no Cutout", 1, 0.8790, 0.8660, options=["--cutout", "0"]),
            run("EMA", 0, 0.8810, ema=0.8850, options=["--ema", "0.99"]),
            {"variant": "EMA", "seed": 1, "skipped": "predicted 25 s would end after the 60 s deadline"}]
    table = ablation.summarise(rows, ["fast", "no Cutout", "EMA"]).splitlines()
    assert table[2] == "| fast | `(recipe)` | 0 1 | 88.10% ± 0.14 (flip-translate) | – | 87.05% | – | 12.0 | 25.0 |"
    assert table[3] == ("| no Cutout | `--cutout 0` | 0 1 | 87.70% ± 0.28 (flip-translate) | -0.40 | 86.50% | – "
                        "| 12.0 | 25.0 |")
    assert table[4] == "| EMA | `--ema 0.99` | 0 | 88.10% ± 0.00 (flip-translate) | +0.00 | – | 88.50% | 12.0 | 25.0 |"
    assert table[5] == "- EMA, seed 1: predicted 25 s would end after the 60 s deadline"
    assert ablation.parse_variant("no Cutout=--cutout 0") == ("no Cutout", ["--cutout", "0"])
    assert ablation.parse_variant("fast=") == ("fast", [])
    for text in ("--cutout 0", "=--cutout 0"):
        with pytest.raises(argparse.ArgumentTypeError):
            ablation.parse_variant(text)


@pytest.mark.slow
def test_ablation_trains_each_variant_and_evaluates_it_without_tta(batches_dir, tmp_path, monkeypatch):
    import contextlib
    import io
    import time

    import ablation
    import time_to_accuracy

    from resnet_cifar.cli import main as cli

    def run_in_process(command, log):
        """The main.py command in this process (the subprocess path: test_time_to_accuracy_times_whole_commands)."""
        assert command[1].endswith("main.py")
        output, started = io.StringIO(), time.perf_counter()
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            code = cli.main(command[2:])
        with log.open("a") as f:
            f.write(" ".join(command) + "\n" + output.getvalue())
        return code, time.perf_counter() - started

    monkeypatch.setattr(time_to_accuracy, "run_logged", run_in_process)
    monkeypatch.setattr(ablation, "run_logged", run_in_process)
    rows = ablation.main(["--data-dir", str(batches_dir), "--out", str(tmp_path), "--model", "resnet20",
                          "--epochs", "1", "--variants", "base=", "ema=--ema 0.9", "--eval-args", "--device cpu",
                          "--", "--device", "cpu", "--precision", "fp32", "--batch-size", "64", "--tta", "flip"])
    assert [row["exit_code"] for row in rows] == [0, 0]
    base, ema = rows
    assert base["tta"] == "flip" and 0 <= base["test_acc_no_tta"] <= 1 and base.get("ema_test_acc") is None
    assert 0 <= ema["ema_test_acc"] <= 1
    # the same seed and options but --ema: the raw weights train identically
    assert ema["test_acc"] == base["test_acc"] and ema["test_acc_no_tta"] == base["test_acc_no_tta"]
    assert "| ema | `--ema 0.9` | 0 |" in (tmp_path / "table.md").read_text()


def test_epoch_end_times_every_variant():
    import epoch_end

    report = epoch_end.main(["--model", "resnet20", "--steps", "1", "--rounds", "1", "--batch-size", "8"])
    assert set(report["seconds"]) == {"steps alone", "foreground save alone", "foreground save + steps",
                                      "background save + steps + wait"}
    assert all(v > 0 for v in report["seconds"].values()) and report["plot_seconds"] > 0


def test_model_cost_counts_a_convolutions_multiply_adds_and_resnet20s():
    import model_cost
    from torch import nn

    # One 3x3 convolution, 3 -> 16 channels, on 32x32: one multiply-add per output value and tap.
    assert model_cost.forward_macs(nn.Conv2d(3, 16, 3, padding=1, bias=False)) == 32 * 32 * 16 * 3 * 9
    (row,) = model_cost.cost_rows(["resnet20"])
    assert row["params"] == 269_722
    assert 40e6 < row["macs"] < 42e6  # the paper's ResNet-20: ~41M multiply-adds
    assert "| resnet20 | 269,722 | 0.041 G | – |" in model_cost.table([row])


def test_cpu_peak_measures_positive_rates():
    import cpu_peak
    import torch

    assert cpu_peak.matmul_gflops(torch.device("cpu"), "fp32", n=64) > 0
    assert cpu_peak.conv_gflops(torch.device("cpu"), "fp32", True, batch=2, width=8, size=8) > 0


@pytest.mark.slow
def test_precision_matrix_marks_the_fastest_of_autos_candidates(capsys):
    import precision_matrix

    report = precision_matrix.main(["--model", "resnet20", "--device", "cpu", "--precisions", "fp32", "fp16",
                                    "--batch-size", "4", "--steps", "1", "--rounds", "1"])
    rates = report["img_per_s"]
    assert set(rates) >= {"fp32/nchw/eager", "fp32/channels_last/eager"}
    fp32 = {key: rate for key, rate in rates.items() if key.startswith("fp32/")}  # fp16 is no CPU candidate
    assert report["fastest_eager"] == max(fp32, key=fp32.get)
    assert f"{report['fastest_eager']:<32}" in next(line for line in capsys.readouterr().out.splitlines()
                                                    if "<- fastest eager" in line)


def test_airbench_steps_times_both_routes_at_each_batch(capsys):
    import airbench_steps

    result = airbench_steps.main(["--steps", "1", "--rounds", "2", "--batch-sizes", "8", "16", "--no-compile",
                                  "--precision", "fp32", "--rules"])
    assert set(result["img_per_s"]) == {f"{route} batch {batch}{rules}" for route in ("sgd", "muon")
                                        for batch in (8, 16) for rules in ("", " rules")}
    assert all(speed > 0 for speed in result["img_per_s"].values())
    assert "vs first" in capsys.readouterr().out


def test_the_benchmark_copy_is_made_from_the_official_layout(tmp_path):
    from helpers import write_batches
    from make_jpeg_copy import main as make_copy

    from resnet_cifar.data.datasets import DataSpec, load_dataset

    write_batches(tmp_path / "official", n_train=50, n_test=20)
    assert make_copy([str(tmp_path / "official"), str(tmp_path / "copy")]) == 0
    copy = load_dataset(DataSpec("cifar10", str(tmp_path / "copy"), download=False))
    official = load_dataset(DataSpec("cifar10", str(tmp_path / "official"), download=False))
    assert len(copy.train) == 50 and len(copy.test) == 20 and copy.classes == official.classes
    assert sorted(p.name for p in (tmp_path / "copy" / "train" / "airplane").iterdir())[0] == "0000.jpg"
    assert make_copy([str(tmp_path / "official"), str(tmp_path / "copy")]) == 2  # never over a copy


def published_script_stand_in(peer) -> str:
    """A text holding every line bench/peer.py patches in `peer`'s script, in the script's form."""
    return "\n".join([old.rstrip("\n") for old, _, _ in peer.patches] + [peer.length[0], peer.runs[0]]) + "\n"


@pytest.mark.parametrize("name", ["speedrun", "airbench94_muon", "airbench94", "airbench95", "airbench96"])
def test_the_peer_patch_changes_each_line_it_names_and_fails_on_a_changed_script(name, tmp_path):
    import peer as module

    peer = module.PEERS[name]
    text = published_script_stand_in(peer)
    patched = module.patched(peer, text, epochs=2.5, runs=3)
    assert patched.startswith(module.CPU_PRELUDE) and "_torch.cuda.Event = _CpuEvent" in patched
    assert "cuda" not in patched.replace(module.CPU_PRELUDE, "").replace("_torch.cuda", "")
    assert "torch.compile" not in patched and ".half()" not in patched
    assert peer.length[1].format(epochs=2.5) in patched and peer.runs[1].format(runs=3) in patched
    with pytest.raises(SystemExit, match="no longer holds"):
        module.patched(peer, text.replace(peer.runs[0], "for run in range(7):"), epochs=None, runs=1)
    copy = tmp_path / "script.py"
    copy.write_text(text)
    with pytest.raises(SystemExit, match="is not the pinned"):
        module.fetch(peer, copy, tmp_path)


def test_curves_runs_one_command_a_curve_point(capsys):
    import curves

    curves.main(["DATA", "--routes", "speedrun", "fast resnet20", "--dry-run"])
    lines = capsys.readouterr().out.splitlines()
    by_name = {route.name: route for route in ROUTES}
    speedrun, resnet20 = by_name["speedrun airbench94"], by_name["fast resnet20"]
    assert len(lines) == len(speedrun.curve) + len(resnet20.curve)
    assert lines[len(speedrun.curve) - 1].endswith("--iterations 243 --seed 0 --data-dir DATA --no-download --run-dir "
                                                   "curves-out/speedrun-airbench94-7.59 --quiet")  # 7.59 x 32 steps
    assert all("main.py --recipe fast --model resnet20 --" in line for line in lines[len(speedrun.curve):])


def test_curves_records_each_point_and_continues_where_it_stopped(tmp_path, monkeypatch, capsys):
    import curves

    route = next(r for r in ROUTES if r.name == "fast resnet20")
    commands = []

    def fake_run(command, **_):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "done: test accuracy 80.50% (final epoch, tta flip)\n", "")

    monkeypatch.setattr(curves.subprocess, "run", fake_run)
    rows = curves.main(["DATA", "--out", str(tmp_path), "--routes", "fast resnet20"])
    assert len(commands) == len(route.curve) and [row["measured"] for row in rows] == [80.5] * len(route.curve)
    first = route.curve[0]
    assert f"| fast resnet20 | {first.epochs:g} | {first.accuracy:.2f}% | 80.50% | {80.5 - first.accuracy:+.2f} |" in (
        tmp_path / "table.md").read_text()
    capsys.readouterr()
    assert len(curves.main(["DATA", "--out", str(tmp_path), "--routes", "fast resnet20"])) == len(route.curve)
    assert len(commands) == len(route.curve)  # every point recorded: nothing run again


def test_curves_names_the_routes_it_knows():
    import curves

    with pytest.raises(SystemExit, match="several routes named 'fast'; valid: 'airbench94-muon-cpu airbench94'"):
        curves.selected(["fast"])


def test_route_cost_times_each_route_on_random_images_then_the_data_sets(batches_dir, monkeypatch, capsys):
    import route_cost

    from resnet_cifar.data.datasets import DataSpec, load_dataset
    from resnet_cifar.training.route_choice import RouteCost

    timed = []

    def measure(config, data=None):
        timed.append((config.recipe, config.model, data))
        return RouteCost(2.0 if data is not None else 1.0, 0.001, 1.0)

    monkeypatch.setattr(route_cost.route_choice, "measure_cost", measure)
    cut, requested = route_cost.first_images, []

    def first_images(data, train, test):  # the fixture holds 100 test images: record the count asked for
        requested.append(test)
        return cut(data, train, test)

    monkeypatch.setattr(route_cost, "first_images", first_images)
    result = route_cost.main([str(batches_dir), "--routes", "fast", "speedrun", "--rounds", "2"])
    assert [(recipe, model, data is None) for recipe, model, data in timed] == [
        ("fast", "resnet20", True), ("fast", "resnet20", False), ("fast", "resnet20", False),
        ("speedrun", "airbench94", True), ("speedrun", "airbench94", False), ("speedrun", "airbench94", False)] * 2
    assert requested == [256, 1024] * 4  # test images: as many as the random ones, then a whole batch
    train = load_dataset(DataSpec(data_dir=str(batches_dir), download=False)).train
    assert all(data.train.images.equal(train.images[:2 * 500]) for recipe, _, data in timed
               if data is not None and recipe == "fast")
    assert result["routes"]["fast"]["data_over_random"] == 2.0
    assert "| fast | 1.000 | 2.000 | 2.000 | 1.00 | 1.00 | 1.00 |" in capsys.readouterr().out
