"""Where a command may write: the one rule every mode and --dry-run apply before any work.

Each path a command will write is checked against the files it reads (a checkpoint, the data set's
folders, input images) and against the files a run owns, unless the command is that run
continuing. A clash, a missing folder or an unwritable place is one line (UserError), raised before
anything is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resnet_cifar.config import EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.data.datasets import DataSpec, data_paths
from resnet_cifar.errors import UserError
from resnet_cifar.runfiles.run_files import seed_run_dir

# The files of a run directory (and of a --seeds folder) that only that run writes.
RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.csv", "timings.json", "curves.png", "seeds.json")
REPORT_FOLDERS = ("report", "report-best")  # a run's final reports
# A folder holds a run (or a --seeds set of runs) when it holds one of these.
RUN_MARKERS = ("config.json", "metrics.csv", "last.pt", "seeds.json")


@dataclass(frozen=True)
class Read:
    """A file or folder the command reads, and what to call it in a refusal."""

    path: Path
    what: str


def holds_run(folder: Path) -> bool:
    return any((Path(folder) / marker).exists() for marker in RUN_MARKERS)


def _same(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return Path(folder).resolve() in Path(path).resolve().parents


def _owner(path: Path) -> tuple[Path, str] | None:
    """(the run, what the file is to it) when path is one of a run's files or inside its reports."""
    path = Path(path)
    if path.name in RUN_FILES and holds_run(path.parent):
        return path.parent, path.name
    for folder in path.parents:
        if folder.name in REPORT_FOLDERS and holds_run(folder.parent):
            return folder.parent, f"{folder.name}/"
    return None


def _check_not_read(path: Path, flag: str, reads: tuple[Read, ...]) -> None:
    for read in reads:
        if _same(path, read.path):
            raise UserError(f"{flag} {path} is {read.what}, which this command reads; choose another name")
        if read.path.is_dir() and _inside(path, read.path):
            raise UserError(f"{flag} {path} is inside {read.what} ({read.path}); write somewhere else")


def _check_writable_folder(folder: Path, path: Path, flag: str) -> None:
    if not folder.exists():
        raise UserError(f"{flag} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {folder} is not writable")


def check_file(path: Path, flag: str, reads: tuple[Read, ...] = ()) -> None:
    """A file the command will write (--output, an export's sidecar, summary's CSV)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    _check_not_read(path, flag, reads)
    owner = _owner(path)
    if owner is not None:
        run, name = owner
        raise UserError(f"{flag} {path} is the {name} of the run in {run}, which is never overwritten; "
                        f"choose another name")
    _check_writable_folder(path.parent, path, flag)


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def check_folder(path: Path, flag: str, reads: tuple[Read, ...] = ()) -> None:
    """A folder the command will create if needed and write files into (--report-dir)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    _check_not_read(path, flag, reads)
    owner = _owner(path / "report.json")
    if owner is not None:
        raise UserError(f"{flag} {path} is the {owner[1]} of the run in {owner[0]}, which is never overwritten; "
                        f"choose another folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {existing} is not writable")


def check_new_run_dir(path: Path, reads: tuple[Read, ...] = (), flag: str = "--run-dir") -> None:
    """A folder for a new run: new, or an existing folder that holds no run."""
    path = Path(path)
    check_folder(path, flag, reads)
    if holds_run(path):
        what = "a --seeds set of runs" if (path / "seeds.json").exists() else "a run"
        raise UserError(f"{flag} {path} already holds {what}; resume it with --resume {path / 'last.pt'} "
                        f"or choose another {flag}")


def check_empty_run_dir(path: Path, reads: tuple[Read, ...], continuing: Path) -> None:
    """A folder another run continues in: new or empty, so that nothing in it is replaced."""
    path = Path(path)
    check_folder(path, "--run-dir", reads)
    if path.is_dir() and any(path.iterdir()):
        what = "another run" if holds_run(path) else "other files"
        raise UserError(f"--run-dir {path} holds {what}; continuing the run of {continuing} needs a new or "
                        f"empty folder")


@dataclass(frozen=True)
class ResumeTarget:
    """Where a resumed run writes. run_dir None: a new folder named as a new run's (runs/<model>-<time>)."""

    run_dir: Path | None
    in_place: bool  # the checkpoint's own run continuing in its folder
    origin: dict | None  # where the run came from, when it continues elsewhere (recorded in config.json)

    def describe(self, checkpoint: Path, new_dir: Path) -> str | None:
        """The one line a run that continues elsewhere prints."""
        if self.in_place:
            return None
        home = Path(checkpoint).resolve().parent
        why = ("" if Path(checkpoint).name == "last.pt"
               else f" ({Path(checkpoint).name} is not its run's latest checkpoint, {home / 'last.pt'})")
        return (f"continuing from {checkpoint}{why} at epoch {self.origin['epoch']}, step "
                f"{self.origin['global_step']}, as a new run in {new_dir}; {home} is left as it is")


def resume_target(checkpoint: Path, typed_run_dir: str | None, payload: dict, reads: tuple[Read, ...]) -> ResumeTarget:
    """A run resumed from `checkpoint`: in its own folder when it is that run's last.pt (and no other
    --run-dir is typed); else in a new or empty folder, so the run it came from keeps its later state."""
    checkpoint = Path(checkpoint)
    home = checkpoint.resolve().parent
    origin = {"checkpoint": str(checkpoint.resolve()), "run_dir": str(home), "epoch": payload["epoch"],
              "global_step": payload["global_step"]}
    typed = Path(typed_run_dir) if typed_run_dir else None
    if checkpoint.name == "last.pt" and (typed is None or _same(typed, home)):
        if not os.access(home, os.W_OK | os.X_OK):
            raise UserError(f"--run-dir {home} is not writable")
        return ResumeTarget(home, True, None)
    if typed is not None and _same(typed, home):
        raise UserError(f"--run-dir {typed} is the run that {checkpoint.name} comes from, whose later state "
                        f"(last.pt, metrics.csv) would be replaced; resume {home / 'last.pt'}, or give a new "
                        f"--run-dir")
    if typed is not None:
        check_empty_run_dir(typed, reads, checkpoint)
    return ResumeTarget(typed, False, origin)


# --- what each command reads and writes -----------------------------------------------------------

def data_reads(spec: DataSpec) -> tuple[Read, ...]:
    return tuple(Read(path, f"the {spec.name} data") for path in data_paths(spec))


def checkpoint_read(path: str | Path) -> Read:
    return Read(Path(path), "the checkpoint")


def check_seed_dirs(root: Path, seeds: list[int], reads: tuple[Read, ...]) -> None:
    """Every seed's folder of a --seeds run, before the first seed trains."""
    check_new_run_dir(root, reads)
    for seed in seeds:
        check_new_run_dir(seed_run_dir(root, seed), reads)


def check_eval(config: EvalConfig, payload: dict | None = None) -> None:
    """--output and --report-dir; against the data set's folders too once the checkpoint (which
    names them) is loaded."""
    reads = (checkpoint_read(config.checkpoint),)
    if payload is not None:
        reads += data_reads(DataSpec.of(payload["config"], config.data_dir))
    if config.output:
        check_file(Path(config.output), "--output", reads)
    if config.report_dir:
        check_folder(Path(config.report_dir), "--report-dir", reads)
        if config.output and _same(Path(config.output).parent, config.report_dir) and Path(config.output).name in (
                "report.json", "per_class.csv", "confusion.png", "calibration.png", "mistakes.png"):
            raise UserError(f"--output {config.output} is one of the files --report-dir writes; choose another name")


def check_predict(config: PredictConfig) -> None:
    if config.output:
        reads = (checkpoint_read(config.checkpoint), *(Read(Path(path), "an input to classify")
                                                        for path in config.inputs))
        check_file(Path(config.output), "--output", reads)


def check_export(config: ExportConfig, payload: dict | None = None, sidecar: Path | None = None) -> None:
    """--output and its metadata file; against the data set's folders too once the checkpoint is loaded."""
    reads = (checkpoint_read(config.checkpoint),)
    if payload is not None:
        reads += data_reads(DataSpec.of(payload["config"], config.data_dir))
    check_file(Path(config.output), "--output", reads)
    if sidecar is not None:
        check_file(sidecar, f"--output {config.output}'s metadata file", reads)


def check_summary(run_dirs: list[str], output: str | None) -> None:
    if output:
        reads = tuple(Read(Path(folder) / name, f"a summarised run's {name}") for folder in run_dirs
                      for name in ("config.json", "metrics.csv"))
        check_file(Path(output), "--output", reads)


def check_train(config: TrainConfig, run_dir_typed: bool, resume: Path | None, payload: dict | None,
                seeds: list[int] | None) -> ResumeTarget | None:
    """Where a training command will write, before it reads the data; for a resume, where it continues."""
    reads = data_reads(DataSpec.of(config.to_dict()))
    if resume is not None:
        return resume_target(resume, config.run_dir if run_dir_typed else None, payload, (checkpoint_read(resume),
                                                                                          *reads))
    if config.run_dir is None:
        return None  # runs/<model>-<start time>: a new name
    if seeds is not None:
        check_seed_dirs(Path(config.run_dir), seeds, reads)
    else:
        check_new_run_dir(Path(config.run_dir), reads)
    return None
