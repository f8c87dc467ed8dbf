"""The report's pictures and the training curves, drawn with matplotlib.

matplotlib's object API (Figure, not pyplot) draws without choosing a GUI backend or keeping
global figure state, so these functions are safe in a training process and in tests. Every
PNG is written to a temporary name and renamed, so a reader never sees half a file.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from resnet_cifar.errors import UserError
from resnet_cifar.results.metrics import classes_with_most_errors
from resnet_cifar.utils.atomic_files import atomic_path


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # a runtime requirement; say so rather than fail deep inside a run
        raise UserError("plots need matplotlib: pip install matplotlib") from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(figure, path: Path) -> Path:
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def plot_confusion(report: dict, path: Path) -> Path:
    """Row-normalised confusion matrix (each true class sums to 100%), annotated in percent. Past
    READABLE_CLASSES classes, the classes most involved in errors only; for CIFAR-100's classes, a
    second panel with the 20 superclass blocks."""
    classes = report["confusion_matrix"]["classes"]
    counts = report["confusion_matrix"]["counts"]
    shown = classes_with_most_errors(counts)
    title = f"confusion (%), top-1 {100 * report['accuracy']:.2f}% on {report['n']} images"
    if len(shown) < len(classes):
        title = f"the {len(shown)} of {len(classes)} classes most involved in errors: " + title
    panels = [(title, [classes[i] for i in shown], [[counts[t][p] for p in shown] for t in shown],
               [sum(counts[t]) for t in shown])]
    blocks = report.get("superclasses")
    if blocks is not None:
        panels.append((f"superclasses (%), {100 * blocks['accuracy']:.2f}% within the true superclass",
                       blocks["classes"], blocks["counts"], [sum(row) for row in blocks["counts"]]))
    figure = _figure(7.5 * len(panels), 6.5)
    for column, panel in enumerate(panels, start=1):
        _confusion_panel(figure, figure.add_subplot(1, len(panels), column), *panel)
    return _save(figure, path)


def _confusion_panel(figure, ax, title: str, classes: list[str], counts: list[list[int]],
                     row_totals: list[int]) -> None:
    """One annotated matrix, each row divided by its true class's images (all of them: predictions
    of classes not shown count too)."""
    totals = torch.tensor(row_totals, dtype=torch.float64)[:, None]
    rows = torch.tensor(counts, dtype=torch.float64) / totals.clamp_min(1)
    image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7 if len(classes) > 10 else None)
    ax.set_yticks(range(len(classes)), classes, fontsize=7 if len(classes) > 10 else None)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for t in range(len(classes)):
        for p in range(len(classes)):
            value = float(rows[t, p])
            if value >= 0.005:
                ax.text(p, t, f"{100 * value:.0f}", ha="center", va="center", fontsize=7 if len(classes) <= 10 else 5,
                        color="white" if value > 0.5 else "black")
    ax.set_title(title, fontsize=9)


def plot_calibration(report: dict, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the diagonal of perfect calibration."""
    bins = [b for b in report["calibration_bins"] if b["count"]]
    figure = _figure(5.5, 5.0)
    ax = figure.add_subplot()
    width = report["calibration_bins"][0]["high"] - report["calibration_bins"][0]["low"]
    ax.bar([b["low"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge",
           edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar([b["low"] for b in bins], [b["confidence"] - b["accuracy"] for b in bins], width=width, align="edge",
           bottom=[b["accuracy"] for b in bins], color="tab:red", alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max softmax probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE {100 * report['ece']:.2f}% ({len(report['calibration_bins'])} bins)")
    ax.legend(loc="upper left")
    return _save(figure, path)


def plot_mistakes(images: torch.Tensor, probabilities: torch.Tensor, labels: torch.Tensor, classes: list[str],
                  path: Path, count: int = 24, columns: int = 8) -> Path:
    """The most confidently wrong images (uint8 (N, 3, H, W)), with true and predicted labels.

    Drawn as one mosaic in a single axes (one subplot per image is ~5x slower to render).
    """
    confidence, predicted = probabilities.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True)][:count].tolist()
    rows = max(1, -(-len(order) // columns))
    size, gap, caption = images.shape[-1], 4, 18  # pixels: image, gap between images, room for two lines
    cell_w, cell_h = size + gap, size + gap + caption
    mosaic = torch.full((rows * cell_h, columns * cell_w, 3), 255, dtype=torch.uint8)
    for slot, index in enumerate(order):
        top, left = (slot // columns) * cell_h + caption, (slot % columns) * cell_w
        mosaic[top:top + size, left:left + size] = images[index].permute(1, 2, 0)
    figure = _figure(columns * 1.35, rows * 1.75 + 0.3)
    ax = figure.add_subplot()
    ax.imshow(mosaic.numpy(), interpolation="nearest")
    ax.axis("off")
    for slot, index in enumerate(order):
        x, y = (slot % columns) * cell_w + size / 2, (slot // columns) * cell_h + caption - 1
        ax.text(x, y, f"{classes[int(labels[index])]}\n→ {classes[int(predicted[index])]} "
                f"{100 * float(confidence[index]):.0f}%", ha="center", va="bottom", fontsize=7)
    if not order:
        ax.text(0.5, 0.5, "no mistakes", ha="center", transform=ax.transAxes)
    ax.set_title("most confidently wrong (true → predicted, confidence)", fontsize=9)
    return _save(figure, path)


def _column(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
    return [p[0] for p in points], [p[1] for p in points]


def lr_axis_scale(lrs: list[float]) -> str:
    """"log" for a step schedule spanning a decade or more (the paper's 0.1 → 0.01 → 0.001: on a
    linear axis its last phase is a line on the floor), else "linear" (cosine and triangular end at
    or near 0, which a log axis would stretch into most of the picture)."""
    if not lrs or min(lrs) <= 0:
        return "linear"
    step_like = len(set(lrs)) <= max(2, len(lrs) // 4)  # each value held ~4 epochs or more
    return "log" if step_like and max(lrs) >= 10 * min(lrs) else "linear"


def plot_curves(rows: list[dict], path: Path) -> Path:
    """Loss and accuracy (train / val / test, and the EMA's) against epoch; the lr on its own axis."""
    figure = _figure(11, 4)
    loss_ax, acc_ax, lr_ax = figure.subplots(1, 3)
    for split, style in (("train", "-"), ("val", "--"), ("test", "-."), ("ema_test", ":")):
        epochs, losses = _column(rows, f"{split}_loss")
        # Markers where --eval-every left epochs out: a lone final evaluation is still visible.
        marker = "o" if 0 < len(epochs) < len(rows) else None
        if epochs:
            loss_ax.plot(epochs, losses, style, marker=marker, label=split.replace("_", " "))
        epochs, accuracies = _column(rows, f"{split}_acc")
        if epochs:
            acc_ax.plot(epochs, [100 * a for a in accuracies], style, marker=marker, label=split.replace("_", " "))
    epochs, lrs = _column(rows, "lr")
    lr_ax.plot(epochs, lrs, color="tab:green")
    lr_ax.set_yscale(lr_axis_scale(lrs))
    tta = next((r.get("tta") for r in reversed(rows) if r.get("tta")), "none")
    from matplotlib.ticker import MaxNLocator

    for ax, title in ((loss_ax, "loss"), (acc_ax, f"accuracy (%), eval tta {tta}"), (lr_ax, "learning rate")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    loss_ax.legend()
    acc_ax.legend()
    return _save(figure, path)


class CurvesPlot:
    """curves.png during a run: redrawn after an epoch once `min_interval_s` have passed since the
    last drawing, and whenever forced (the run's last epoch, a stop).

    Why not after every epoch: a redraw takes ~0.4 s, a third of a ResNet-18 epoch on an H200
    (bench/README.md); at most one every 30 s keeps the picture current for whoever watches it.
    `rows` (metrics.csv's reader) is called only when a drawing is due.
    """

    def __init__(self, path: Path, rows: Callable[[], list[dict]], min_interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.rows, self.min_interval_s, self.clock = Path(path), rows, min_interval_s, clock
        self._drawn_at: float | None = None

    def update(self, force: bool = False) -> bool:
        """Redraw if due (or forced) and there is something to draw; True when it drew."""
        due = self._drawn_at is None or self.clock() - self._drawn_at >= self.min_interval_s
        if not (due or force):
            return False
        rows = self.rows()
        if not rows:
            return False
        plot_curves(rows, self.path)
        self._drawn_at = self.clock()
        return True
