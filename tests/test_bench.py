"""The benchmarks time what they say they time (bench/ is not a package: imported by path)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import loader  # noqa: E402
import training  # noqa: E402


@pytest.fixture
def throughput():
    import throughput as module

    return module


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


def test_feature_cost_measures_every_variant(batches_dir):
    import feature_cost

    report = feature_cost.main(["--data-dir", str(batches_dir), "--batch-size", "32", "--images", "64",
                                "--steps", "1", "--eval-images", "50", "--rounds", "1", "--device", "cpu"])
    assert set(report["loader_img_per_s"]) == set(feature_cost.LOADER_VARIANTS)
    assert set(report["train_img_per_s"]) == {"plain", "ema 0.999"}
    assert set(report["eval_img_per_s"]) == {"none", "flip", "flip-translate"}
    assert all(v > 0 for part in ("loader_img_per_s", "train_img_per_s", "eval_img_per_s")
               for v in report[part].values())


def test_eval_batch_measures_every_batch_and_tta():
    import eval_batch

    report = eval_batch.main(["--images", "48", "--batches", "16", "48", "--eval-batch", "24",
                              "--tta", "none", "flip", "--rounds", "1"])
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
