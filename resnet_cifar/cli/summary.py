"""--mode summary: one line per run directory, and mean ± std over runs that differ only by seed."""
from __future__ import annotations

import csv
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from resnet_cifar.errors import UserError
from resnet_cifar.options import NOT_THE_EXPERIMENT
from resnet_cifar.results.seed_summary import SeedSummary
from resnet_cifar.runfiles.run_files import MetricsLog
from resnet_cifar.utils.atomic_files import atomic_path

SEED_FOLDER = re.compile(r"seed[0-9]+", re.ASCII)
MAX_CONFIG_BYTES = 1_000_000
MAX_METRICS_BYTES = 100_000_000


@dataclass(frozen=True)
class RunLine:
    run_dir: Path
    model: str
    recipe: str
    seed: int
    epochs_done: int
    epochs: int
    final_test_acc: float | None
    best_val_test_acc: float | None  # test accuracy at the epoch of the best validation accuracy
    wall_seconds: float  # training and evaluation of every epoch (start-up and checkpoint writes aside)
    tta: str
    experiment: str  # the config without NOT_THE_EXPERIMENT keys, as a key for grouping
    dataset: str = "cifar10"
    final_split: str = "test"  # "val" for a run on a folder without test images: its final figure is on val

    @property
    def label(self) -> str:
        return f"{self.model} {self.recipe}" + ("" if self.dataset == "cifar10" else f" on {self.dataset}")

    def as_row(self) -> dict:
        return {"run_dir": str(self.run_dir), "dataset": self.dataset, "model": self.model, "recipe": self.recipe,
                "seed": self.seed,
                "epochs_done": self.epochs_done, "epochs": self.epochs, "final_test_acc": self.final_test_acc,
                "best_val_test_acc": self.best_val_test_acc, "wall_seconds": round(self.wall_seconds, 1),
                "tta": self.tta}


def read_run(run_dir: Path) -> RunLine:
    """One run's line; UserError naming the file and the reason for a folder that is no run or a damaged one."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no config.json)")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"{config_path} is {config_path.stat().st_size:,} bytes, more than any run's options")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{config_path} is not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise UserError(f"{config_path} holds {type(config).__name__}, not a run's options")
    metrics = run_dir / "metrics.csv"
    if metrics.exists() and not metrics.is_file():  # a FIFO would block the read forever
        raise UserError(f"{metrics} is not a regular file")
    if metrics.is_file() and metrics.stat().st_size > MAX_METRICS_BYTES:
        raise UserError(f"{metrics} is {metrics.stat().st_size:,} bytes, more than any run's metrics")
    try:
        return _run_line(run_dir, config, MetricsLog(metrics).rows())
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{metrics} is not readable ({getattr(e, 'strerror', None) or e})") from None
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise UserError(f"{run_dir} holds a damaged config.json or metrics.csv ({e})") from None


def _accuracy(text: str) -> float:
    """A metrics.csv accuracy: a fraction from 0 to 1 (ValueError for anything else)."""
    value = float(text)
    if not 0 <= value <= 1:  # also NaN
        raise ValueError(f"accuracy {text!r} is not a fraction from 0 to 1")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1e9:
        raise ValueError(f"seconds {text!r} is not a duration")
    return value


def _count(config: dict, name: str, default: int) -> int:
    value = config.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 2**63:
        raise ValueError(f"{name} is {value!r}, not a count")
    return int(value)


def _run_line(run_dir: Path, config: dict, rows: list[dict]) -> RunLine:
    # A run without a test set (a folder without test/) reports its final figures on val.
    final_split = "test" if any(r.get("test_acc") for r in rows) or not any(r.get("val_acc") for r in rows) else "val"
    final = _accuracy(rows[-1][f"{final_split}_acc"]) if rows and rows[-1].get(f"{final_split}_acc") else None
    with_val = [r for r in rows if r.get("val_acc")]
    best = max(with_val, key=lambda r: _accuracy(r["val_acc"])) if with_val else None
    experiment = json.dumps({k: v for k, v in config.items() if k not in NOT_THE_EXPERIMENT}, sort_keys=True)
    return RunLine(
        run_dir=run_dir, model=config.get("model", "?"), recipe=config.get("recipe", "seed"),
        seed=_count(config, "seed", 0), epochs_done=len(rows), epochs=_count(config, "epochs", 0),
        final_test_acc=final, best_val_test_acc=_accuracy(best["test_acc"]) if best and best.get("test_acc") else None,
        # Rows written before the epoch_seconds column existed count their training time only.
        wall_seconds=sum(_seconds(r.get("epoch_seconds") or r.get("seconds") or "0") for r in rows),
        tta=(rows[-1].get("tta") or "none") if rows else config.get("tta", "none"), experiment=experiment,
        dataset=config.get("dataset", "cifar10"), final_split=final_split,
    )


def _seed_folders(folder: Path) -> list[Path]:
    """A --seeds folder's runs (seed<N>/ holding config.json), in seed order."""
    found = [p for p in folder.glob("seed*") if p.is_dir() and SEED_FOLDER.fullmatch(p.name)
             and (p / "config.json").exists()]
    return sorted(found, key=lambda p: int(p.name[4:]))


def _why_not_a_run(path: Path) -> str:
    if not path.exists():
        return "no such file or folder"
    if not path.is_dir():
        return "a file, not a run folder"
    if not any(path.iterdir()):
        return "an empty folder"
    return "not a run folder (no config.json)"


def collect_runs(paths: list[str]) -> tuple[list[RunLine], list[str]]:
    """The runs in what `runs/*` expands to: run folders, and the seeds of --seeds folders; a note
    for each other path (a file, an empty or foreign folder, a damaged run naming its file)."""
    runs, notes = [], []
    for path in map(Path, paths):
        folders = [path] if (path / "config.json").exists() else _seed_folders(path) if path.is_dir() else []
        if not folders:
            notes.append(f"skipped {path}: {_why_not_a_run(path)}")
        for folder in folders:
            try:
                runs.append(read_run(folder))
            except UserError as e:
                notes.append(f"skipped {folder}: {e}")
    return runs, notes


def read_runs(paths: list[str]) -> list[RunLine]:
    """collect_runs, its notes on stderr; one UserError naming each path's reason when no run was found."""
    runs, notes = collect_runs(paths)
    if not runs:
        reasons = "; ".join(note.removeprefix("skipped ") for note in notes)
        raise UserError(f"no run found ({reasons}); a run folder holds config.json, a --seeds folder seed<N>/ runs")
    for note in notes:
        print(note, file=sys.stderr)
    return runs


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def format_lines(runs: list[RunLine]) -> list[str]:
    """A line per run, then one per group of two or more finished runs that differ only by seed."""
    lines = [f"{run.run_dir}: {run.label} seed {run.seed}, epoch {run.epochs_done}/{run.epochs}, "
             f"final {run.final_split} {_percent(run.final_test_acc)}, best-on-val test "
             f"{_percent(run.best_val_test_acc)}, "
             f"wall time {run.wall_seconds / 60:.1f} min (tta {run.tta})" for run in runs]
    for group in seed_groups(runs):
        finished = [r for r in group if r.final_test_acc is not None]
        summary = SeedSummary(tuple(r.seed for r in finished), tuple(r.final_test_acc for r in finished),
                              group[0].final_split)
        lines.append(f"{group[0].label}: " + summary.line(group[0].tta))
    return lines


def seed_groups(runs: list[RunLine]) -> list[list[RunLine]]:
    groups: dict[str, list[RunLine]] = {}
    for run in runs:
        groups.setdefault(run.experiment, []).append(run)
    return [g for g in groups.values()
            if len({r.seed for r in g if r.final_test_acc is not None}) >= 2]


def write_csv(path: Path, runs: list[RunLine]) -> None:
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(runs[0].as_row()))
        writer.writeheader()
        for run in runs:
            writer.writerow({k: ("" if v is None else v) for k, v in run.as_row().items()})
