"""The report's figures (metrics.py) against hand-computed values on tiny cases."""

import pytest
import torch

from resnet_cifar.results import metrics
from resnet_cifar.results.metrics import Predictions, build_report

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


def test_ece_of_the_built_report_by_hand():
    """The tiny case's confidences (softmax maxima) 0.9647, 0.6652, 0.9094, 0.6652, 0.5761, 0.7275,
    right, right, wrong, right, right, wrong: each alone in its 1/15-wide bin but the two right ones at
    0.6652, so ECE = mean |right - confidence| = (0.0353 + 2 x 0.3348 + 0.9094 + 0.4239 + 0.7275) / 6."""
    assert build_report(tiny_case(), CLASSES)["ece"] == pytest.approx(0.460943, abs=1e-6)


def test_text_report_lists_every_part():
    text = metrics.format_report(build_report(tiny_case(), CLASSES))
    assert "top-1 66.67%  top-5 100.00%" in text and "ECE" in text
    assert "confusion matrix (rows true, columns predicted):" in text
    assert "most confused: a -> b (1), c -> a (1)" in text


def test_classes_most_involved_in_errors():
    counts = [[5, 0, 0, 0], [0, 5, 3, 0], [0, 1, 5, 0], [2, 0, 0, 5]]
    # errors per class (as true + as predicted): 0: 2, 1: 4, 2: 4, 3: 2 -> the two of 4 are 1 and 2
    assert metrics.classes_with_most_errors(counts, 2) == [1, 2]
    assert metrics.classes_with_most_errors(counts, 3) == [0, 1, 2]  # ties by class order
    assert metrics.classes_with_most_errors(counts, 10) == [0, 1, 2, 3]
    # classes in no error are not shown: only 2 of these 5 are
    counts = [[5, 2, 0, 0, 0], [1, 5, 0, 0, 0], [0, 0, 5, 0, 0], [0, 0, 0, 5, 0], [0, 0, 0, 0, 5]]
    assert metrics.classes_with_most_errors(counts, 3) == [0, 1]


def test_superclass_blocks_of_cifar100_by_hand():
    from resnet_cifar.data.cifar100_classes import COARSE_CLASSES, FINE_CLASSES

    classes = list(FINE_CLASSES)
    apple, orange, bee = classes.index("apple"), classes.index("orange"), classes.index("bee")
    labels = torch.tensor([apple, apple, apple, bee])
    predicted = torch.tensor([apple, orange, bee, bee])  # right, same superclass, another superclass, right
    blocks = metrics.superclass_report(metrics.confusion_matrix(labels, predicted, 100), classes)
    assert blocks["accuracy"] == 0.75
    fruit, insects = COARSE_CLASSES.index("fruit_and_vegetables"), COARSE_CLASSES.index("insects")
    assert blocks["counts"][fruit][fruit] == 2 and blocks["counts"][fruit][insects] == 1
    assert blocks["counts"][insects][insects] == 1 and sum(map(sum, blocks["counts"])) == 4
    assert metrics.superclass_report(torch.zeros(10, 10, dtype=torch.long), [str(i) for i in range(10)]) is None


def test_confusion_picture_at_100_classes(tmp_path):
    from helpers import png_ok

    from resnet_cifar.data.cifar100_classes import FINE_CLASSES
    from resnet_cifar.results.plots import plot_confusion

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(500) % 100
    logits = torch.randn(500, 100, generator=generator) + 3 * torch.nn.functional.one_hot(labels, 100)
    report = build_report(Predictions(logits, labels), list(FINE_CLASSES))
    assert png_ok(plot_confusion(report, tmp_path / "confusion.png"))
