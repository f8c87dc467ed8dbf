"""Mean and sample standard deviation over seeds."""
import pytest

from resnet_cifar.results.seed_summary import SeedSummary


def test_seed_summary_mean_and_sample_std():
    summary = SeedSummary((0, 1, 2), (0.90, 0.92, 0.94))
    assert summary.mean == pytest.approx(0.92)
    assert summary.std == pytest.approx(0.02)  # sample std (n - 1)
    assert "92.00% ± 2.00 (min 90.00%, max 94.00%" in summary.line("none")
    assert SeedSummary((5,), (0.5,)).std == 0.0


def test_runs_without_a_test_set_summarise_their_val_split():
    summary = SeedSummary((0, 1), (0.5, 0.7), split="val")
    assert summary.line("none").startswith("final val accuracy over 2 seeds (tta none): 60.00%")
    assert summary.as_dict()["val_accuracy"] == [0.5, 0.7] and "test_accuracy" not in summary.as_dict()
