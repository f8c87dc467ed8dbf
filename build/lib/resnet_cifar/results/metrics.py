"""The evaluation report: metrics computed from a split's logits, as text, JSON and CSV.

Everything here is a pure function of (logits, labels, class names), so each figure can be
checked by hand on a tiny case (tests/test_report.py).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_cifar.data import cifar100_classes
from resnet_cifar.utils.atomic_files import atomic_path

ECE_BINS = 15
# Above this many classes a confusion matrix no longer reads as text or as an annotated picture:
# the report shows the classes with the most errors (and CIFAR-100's superclass blocks) instead.
READABLE_CLASSES = 20


@dataclass(frozen=True)
class Predictions:
    """A split's logits (N, C) float32 on the CPU, with the true labels (N,)."""

    logits: torch.Tensor
    labels: torch.Tensor

    @property
    def probabilities(self) -> torch.Tensor:
        return self.logits.softmax(1)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted], (C, C) int64."""
    flat = labels * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(1)
    return hits.float().mean().item()


def most_confused_pairs(confusion: torch.Tensor, classes: list[str], count: int = 5) -> list[dict]:
    """The largest off-diagonal cells: (true, predicted, images), largest first, ties by class order."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    cells = sorted(((int(off[t, p]), t, p) for t in range(len(classes)) for p in range(len(classes)) if off[t, p]),
                   key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": classes[t], "predicted": classes[p], "count": n} for n, t, p in cells[:count]]


def classes_with_most_errors(counts: list[list[int]], count: int = READABLE_CLASSES) -> list[int]:
    """The indices of the (at most) `count` classes most involved in errors (images of the class
    predicted as another, plus images of others predicted as it), in class order; classes in no
    error are left out. All classes when there are no more than `count`, or no error at all."""
    confusion = torch.tensor(counts)
    off = confusion.clone()
    off.fill_diagonal_(0)
    errors = off.sum(0) + off.sum(1)
    if len(confusion) <= count or not errors.any():
        return list(range(len(confusion)))
    ranked = sorted((i for i in range(len(confusion)) if errors[i] > 0), key=lambda i: (-int(errors[i]), i))
    return sorted(ranked[:count])


def superclass_report(confusion: torch.Tensor, classes: list[str]) -> dict | None:
    """For CIFAR-100's fine classes: the share of images predicted within their true superclass,
    and the 20 x 20 confusion of superclasses (counts summed over their classes); else None."""
    groups = cifar100_classes.superclasses_of(classes)
    if groups is None:
        return None
    names = list(cifar100_classes.COARSE_CLASSES)
    member = torch.zeros(len(classes), len(names), dtype=torch.long)
    member[torch.arange(len(classes)), torch.tensor([names.index(g) for g in groups])] = 1
    blocks = member.T @ confusion @ member  # (20, 20): true superclass x predicted superclass
    return {"accuracy": float(blocks.diagonal().sum()) / max(1, int(blocks.sum())),
            "classes": names, "counts": blocks.tolist()}


def calibration_bins(confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins (lo, hi]: count, mean confidence and accuracy of each."""
    edges = torch.linspace(0, 1, bins + 1)
    # Bin b holds lo < confidence <= hi; a confidence of exactly 0 cannot occur after softmax.
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, bins - 1)
    result = []
    for b in range(bins):
        members = index == b
        n = int(members.sum())
        result.append({
            "low": float(edges[b]), "high": float(edges[b + 1]), "count": n,
            "confidence": float(confidence[members].mean()) if n else None,
            "accuracy": float(correct[members].float().mean()) if n else None,
        })
    return result


def expected_calibration_error(bins: list[dict], total: int) -> float:
    """sum over bins of |accuracy - confidence| weighted by the bin's share (Guo et al. 2017)."""
    return sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])


def build_report(predictions: Predictions, classes: list[str]) -> dict:
    """Every figure of the report as a JSON-ready dict (accuracies 0-1, confusion as counts)."""
    logits, labels = predictions.logits.float(), predictions.labels
    n, num_classes = logits.shape
    probabilities = logits.softmax(1)
    confidence, predicted = probabilities.max(1)
    correct = predicted == labels
    confusion = confusion_matrix(labels, predicted, num_classes)
    totals = confusion.sum(1)
    bins = calibration_bins(confidence, correct)
    return {
        "n": n,
        "accuracy": correct.float().mean().item(),
        "top5_accuracy": top_k_accuracy(logits, labels, 5),
        "loss": F.cross_entropy(logits, labels).item(),
        "per_class_accuracy": {name: (int(confusion[i, i]) / int(totals[i]) if totals[i] else None)
                               for i, name in enumerate(classes)},
        "confusion_matrix": {"classes": list(classes), "counts": confusion.tolist()},
        "most_confused": most_confused_pairs(confusion, list(classes), 5 if num_classes <= 10 else 10),
        "superclasses": superclass_report(confusion, list(classes)),
        "ece": expected_calibration_error(bins, n),
        "calibration_bins": bins,
    }


def format_report(report: dict) -> str:
    """The report as compact text for the terminal: every class and the confusion matrix up to
    READABLE_CLASSES classes; beyond, the weakest and strongest classes (per_class.csv has all)."""
    classes = report["confusion_matrix"]["classes"]
    lines = [f"top-1 {100 * report['accuracy']:.2f}%  top-5 {100 * report['top5_accuracy']:.2f}%  "
             f"loss {report['loss']:.4f}  ECE {100 * report['ece']:.2f}% ({ECE_BINS} bins)"]
    if report.get("superclasses") is not None:
        lines.append(f"superclass accuracy {100 * report['superclasses']['accuracy']:.2f}% (the prediction in the "
                     f"true class's superclass)")
    accuracies = report["per_class_accuracy"]
    if len(classes) <= READABLE_CLASSES:
        lines.append("per class:")
        lines += [f"  {name:>12s} {_percent(acc)}" for name, acc in accuracies.items()]
        lines.append("confusion matrix (rows true, columns predicted):")
        lines.append(" " * 14 + " ".join(f"{name[:5]:>5s}" for name in classes))
        for name, row in zip(classes, report["confusion_matrix"]["counts"], strict=True):
            lines.append(f"  {name:>12s}" + " ".join(f"{v:5d}" for v in row))
    else:
        ranked = sorted((acc, name) for name, acc in accuracies.items() if acc is not None)
        lines.append(f"weakest classes of {len(classes)}: " + ", ".join(f"{name} {_percent(acc).strip()}"
                                                                      for acc, name in ranked[:10]))
        lines.append("strongest: " + ", ".join(f"{name} {_percent(acc).strip()}" for acc, name in ranked[::-1][:5]))
    if report["most_confused"]:
        lines.append("most confused: " + ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})"
                                                   for p in report["most_confused"]))
    return "\n".join(lines)


def _percent(accuracy: float | None) -> str:
    return "     -" if accuracy is None else f"{100 * accuracy:6.2f}%"


def write_json(path: Path, report: dict) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def write_per_class_csv(path: Path, report: dict) -> None:
    classes = report["confusion_matrix"]["classes"]
    counts = report["confusion_matrix"]["counts"]
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "images", "correct", "accuracy", "most_predicted_instead"])
        for i, name in enumerate(classes):
            row = counts[i]
            wrong = [(v, classes[j]) for j, v in enumerate(row) if j != i and v]
            instead = max(wrong, key=lambda w: (w[0], -classes.index(w[1])))[1] if wrong else ""
            total = sum(row)
            writer.writerow([name, total, row[i], f"{row[i] / total:.6f}" if total else "", instead])
