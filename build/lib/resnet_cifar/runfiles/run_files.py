"""The run directory: config.json, metrics.csv, last.pt and best.pt."""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

from resnet_cifar.errors import UserError
from resnet_cifar.utils.atomic_files import atomic_path, write_text

METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
    "seconds", "img_per_s", "ema_val_loss", "ema_val_acc", "ema_test_loss", "ema_test_acc", "tta", "epoch_seconds",
)
RUN_MARKERS = ("config.json", "metrics.csv", "last.pt")


def default_run_dir(model: str, root: Path = Path("runs")) -> Path:
    return root / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def holds_run(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def prepare_new_run_dir(path: Path) -> Path:
    """Create path for a new run; refuse one that already holds a run or cannot be written."""
    path = Path(path)
    check_new_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --run-dir {path}: {e.strerror or e}") from None
    check_writable(path)
    return path


def resumed_run_dir(run_dir: str | None, typed: bool, checkpoint: Path) -> Path:
    """Where a resumed run writes: the typed --run-dir, else the checkpoint's folder; refused unless writable."""
    path = Path(run_dir) if typed and run_dir else Path(checkpoint).resolve().parent
    check_writable(path)
    return path


def check_new_run_dir(path: Path) -> None:
    """Refuse, without creating anything, a --run-dir that is a file or already holds a run."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--run-dir {path} is a file, not a directory")
    if holds_run(path):
        raise UserError(
            f"--run-dir {path} already holds a run; resume it with --resume {path / 'last.pt'} "
            f"or choose another --run-dir"
        )
    if path.is_dir():
        check_writable(path)


def remove_run_files(path: Path) -> None:
    """Remove the config.json and metrics.csv of a start that never wrote a checkpoint."""
    for name in ("config.json", "metrics.csv"):
        (Path(path) / name).unlink(missing_ok=True)


def written_by_job(path: Path, run_id: str | None) -> bool:
    """True when path/config.json was written by the torchrun job run_id (TORCHELASTIC_RUN_ID)."""
    try:
        recorded = json.loads((Path(path) / "config.json").read_text()).get("elastic_run_id")
    except (OSError, ValueError, AttributeError):
        return False
    return run_id is not None and recorded == run_id


def check_writable(path: Path) -> None:
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--run-dir {path} is not writable")


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
