"""The run directory: config.json, metrics.csv, last.pt and best.pt."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from resnet_cifar.errors import UserError
from resnet_cifar.utils.atomic_files import TEMP_MARKER, atomic_path, write_text

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
    "seconds", "img_per_s", "ema_val_loss", "ema_val_acc", "ema_test_loss", "ema_test_acc", "tta", "epoch_seconds",
)


def default_run_dir(model: str, root: Path = Path("runs")) -> Path:
    """runs/<model>-<start time>, with -2, -3, ... when a run started in the same second."""
    base = root / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, count = base, 1
    while candidate.exists():
        count += 1
        candidate = base.with_name(f"{base.name}-{count}")
    return candidate


def seed_run_dir(root: Path, seed: int) -> Path:
    """Where --seeds puts one seed's run."""
    return Path(root) / f"seed{seed}"


def create_run_dir(path: Path) -> Path:
    """Create the folder of a run whose destination was checked (destinations.py)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --run-dir {path}: {e.strerror or e}") from None
    return path


# What a start writes before its first checkpoint.
START_FILES = ("config.json", "metrics.csv", "curves.png", "timings.json")


def remove_run_files(path: Path) -> None:
    """Remove what a start that never wrote a checkpoint left: config.json, metrics.csv and the like,
    TensorBoard events and temporaries of writes cut off."""
    path = Path(path)
    for name in START_FILES:
        (path / name).unlink(missing_ok=True)
    for pattern in ("events.out.tfevents*", f".*{TEMP_MARKER}*"):
        for leftover in path.glob(pattern):
            leftover.unlink(missing_ok=True)


def written_by_job(path: Path, run_id: str | None) -> bool:
    """True when path/config.json was written by the torchrun job run_id (TORCHELASTIC_RUN_ID)."""
    try:
        recorded = json.loads((Path(path) / "config.json").read_text()).get("elastic_run_id")
    except (OSError, ValueError, AttributeError):
        return False
    return run_id is not None and recorded == run_id


def write_config(path: Path, config: dict) -> None:
    write_text(path / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")


class MetricsLog:
    """metrics.csv, one row per finished epoch."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def truncate_after(self, epoch: int) -> None:
        """Drop rows past `epoch`: a run killed after logging but before its checkpoint landed
        would otherwise log those epochs twice when resumed."""
        if self.path.exists():
            self._write([row for row in self.rows() if (e := _epoch_of(row)) is not None and e <= epoch])

    def append(self, row: dict) -> None:
        self._write(self.rows() + [row])

    def start_from(self, rows: list[dict]) -> None:
        """A run continued in a new folder begins with the rows of the run it came from."""
        self._write(rows)

    def _write(self, rows: list[dict]) -> None:
        """Rewrite the whole (small) file through a temp file and a rename, so a crash never
        leaves half a row behind."""
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows({k: _format(row.get(k)) for k in METRIC_COLUMNS} for row in rows)

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def _epoch_of(row: dict) -> int | None:
    """The row's epoch, or None for a line that is not a metrics row."""
    try:
        return int(row.get("epoch") or "")
    except ValueError:
        return None


def _format(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
