"""Where a command may write: the one rule every mode and --dry-run apply before any work.

Each path a command will write is checked against the files it reads (a checkpoint, the data set's
folders, input images) and against the files a run owns, unless the command is that run
continuing. A clash, a missing folder or an unwritable place is one line (UserError), raised before
anything is written.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from resnet_cifar.config import EvalConfig, ExportConfig, PredictConfig, TrainConfig
from resnet_cifar.data.datasets import DataSpec, data_paths
from resnet_cifar.errors import UserError
from resnet_cifar.runfiles.places import (
    CACHE_PREFIX,
    REPORT_FOLDERS,
    RUN_FILES,
    abandoned_start,
    entries,
    holds_run,
    inside,
    place,
    same_place,
    writable_path,
)


@dataclass(frozen=True)
class Read:
    """A file or folder the command reads, and what to call it in a refusal. inside: what may not be
    written in it, when it is a folder: "all" (nothing), "existing" (no file it holds), "" (only
    the folder itself is refused)."""

    path: Path
    what: str
    inside: str = "all"


def _owner(path: Path) -> tuple[Path, str] | None:
    """(the run, what the file is to it) when the placed path is a run's file, inside its reports,
    or another file already in a run's folder."""
    path = place(path)
    if path.name in RUN_FILES and holds_run(path.parent):
        return path.parent, path.name
    for folder in path.parents:
        if folder.name in REPORT_FOLDERS and holds_run(folder.parent):
            return folder.parent, f"{folder.name}/"
    if path.exists() and holds_run(path.parent):
        return path.parent, f"file {path.name}"
    return None


def check_not_read(path: Path, flag: str, reads: tuple[Read, ...]) -> None:
    for read in reads:
        if same_place(path, read.path):
            raise UserError(f"{flag} {path} is {read.what}, which this command reads; choose another name")
        if not read.inside or not read.path.is_dir() or not inside(path, read.path):
            continue
        if read.inside == "all":
            raise UserError(f"{flag} {path} is inside {read.what} ({read.path}); write somewhere else")
        if place(path).exists():
            raise UserError(f"{flag} {path} is a file of {read.what} ({read.path}), which is never replaced; "
                            f"write somewhere else")


def _check_writable_folder(folder: Path, path: Path, flag: str) -> None:
    if not folder.exists():
        raise UserError(f"{flag} {path}: the folder {folder} does not exist")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {folder} is not writable")


def check_named(path: str | Path, flag: str) -> None:
    if not isinstance(path, Path) and not str(path).strip():
        raise UserError(f"{flag} is empty; give a path")


def check_file(path: Path, flag: str, reads: tuple[Read, ...] = ()) -> None:
    """A file the command will write (--output, an export's sidecar, summary's CSV): never a folder,
    a special file (FIFO, device, socket), what the command reads, a file of a run or data folder."""
    check_named(path, flag)
    path, target = Path(path), place(path)
    if target.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    if target.exists() and not target.is_file():
        raise UserError(f"{flag} {path} is not a regular file (a FIFO, device or socket); give a file name")
    if target.name.startswith(CACHE_PREFIX):
        raise UserError(f"{flag} {path} is an image folder's cache, which is never replaced; choose another name")
    check_not_read(path, flag, reads)
    owner = _owner(target)
    if owner is not None:
        run, name = owner
        raise UserError(f"{flag} {path} is the {name} of the run in {run}, which is never overwritten; "
                        f"choose another name")
    _check_writable_folder(target.parent, path, flag)


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def check_folder(path: Path, flag: str, reads: tuple[Read, ...] = ()) -> None:
    """A folder the command will create if needed and write files into (--report-dir)."""
    check_named(path, flag)
    path, target = Path(path), place(path)
    if target.exists() and not target.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder")
    check_not_read(path, flag, reads)
    for folder in (target, *target.parents):
        if folder.name in REPORT_FOLDERS and holds_run(folder.parent):
            raise UserError(f"{flag} {path} is the {folder.name}/ of the run in {folder.parent}, which is never "
                            f"overwritten; choose another folder")
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: the folder {existing} is not writable")


def check_new_run_dir(path: Path, reads: tuple[Read, ...] = (), flag: str = "--run-dir") -> None:
    """A folder for a new run: new, empty, or left by a start that saved no checkpoint."""
    check_named(path, flag)
    path, target = Path(path), place(path)
    if holds_run(target):
        check_not_read(path, flag, reads)  # the message below says more than check_folder's
    else:
        check_folder(path, flag, reads)
    if not target.is_dir() or abandoned_start(target):
        return
    if holds_run(target):
        what = "a --seeds set of runs" if (target / "seeds.json").exists() else "a run"
        raise UserError(f"{flag} {path} already holds {what}; resume it with --resume "
                        f"{shlex.quote(str(writable_path(path) / 'last.pt'))} "
                        f"or choose another {flag}")
    if entries(target):
        raise UserError(f"{flag} {path} holds other files ({', '.join(sorted(e.name for e in entries(target))[:3])}"
                        f"{', ...' if len(entries(target)) > 3 else ''}); a new run starts in a new or empty "
                        f"folder")


def check_empty_run_dir(path: Path, reads: tuple[Read, ...], continuing: Path) -> None:
    """A folder another run continues in: new or empty, so that nothing in it is replaced."""
    path, target = Path(path), place(path)
    if not holds_run(target):
        check_folder(path, "--run-dir", reads)
    if target.is_dir() and entries(target):
        what = "another run" if holds_run(target) else "other files"
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
        real = place(checkpoint)
        home = real.parent
        why = ("" if real.name == "last.pt"
               else f" ({Path(checkpoint).name} is not its run's latest checkpoint, {home / 'last.pt'})")
        return (f"continuing from {checkpoint}{why} at epoch {self.origin['epoch']}, step "
                f"{self.origin['global_step']}, as a new run in {new_dir}; {home} is left as it is")


def resume_target(checkpoint: Path, typed_run_dir: str | None, payload: dict, reads: tuple[Read, ...]) -> ResumeTarget:
    """A run resumed from `checkpoint`: in its own folder when it is that run's last.pt (and no other
    --run-dir is typed); else in a new or empty folder, so the run it came from keeps its later state.
    The checkpoint is what its path leads to: a link named last.pt to a best.pt is a best.pt."""
    checkpoint = Path(checkpoint)
    real = place(checkpoint)
    home = real.parent
    origin = {"checkpoint": str(real), "run_dir": str(home), "epoch": payload["epoch"],
              "global_step": payload["global_step"]}
    if typed_run_dir is not None:
        check_named(typed_run_dir, "--run-dir")
    typed = Path(typed_run_dir) if typed_run_dir is not None else None
    if real.name == "last.pt" and (typed is None or same_place(typed, home)):
        if not os.access(home, os.W_OK | os.X_OK):
            raise UserError(f"--run-dir {home} is not writable")
        return ResumeTarget(home, True, None)
    if typed is not None and same_place(typed, home):
        raise UserError(f"--run-dir {typed} is the run that {checkpoint.name} comes from, whose later state "
                        f"(last.pt, metrics.csv) would be replaced; resume {home / 'last.pt'}, or give a new "
                        f"--run-dir")
    if typed is not None:
        check_empty_run_dir(typed, reads, checkpoint)
    return ResumeTarget(typed, False, origin)


# --- what each command reads and writes -----------------------------------------------------------

def data_reads(spec: DataSpec) -> tuple[Read, ...]:
    """The data set's folders (nothing is written in them) and the folder that holds them (none of
    its files is replaced)."""
    reads = tuple(Read(path, f"the {spec.name} data") for path in data_paths(spec))
    data_dir = Path(spec.data_dir)
    if data_dir.is_dir() and not any(same_place(read.path, data_dir) for read in reads):
        reads += (Read(data_dir, f"the data folder of {spec.name}", inside="existing"),)
    return reads


def checkpoint_read(path: str | Path) -> Read:
    return Read(Path(path), "the checkpoint")


def check_eval(config: EvalConfig, payload: dict | None = None) -> None:
    """--output and --report-dir; against the data set's folders too once the checkpoint (which
    names them) is loaded."""
    reads = (checkpoint_read(config.checkpoint),)
    if payload is not None:
        reads += data_reads(DataSpec.of(payload["config"], config.data_dir))
    if config.output is not None:
        check_file(config.output, "--output", reads)
    if config.report_dir is not None:
        check_folder(config.report_dir, "--report-dir", reads)
        if config.output and same_place(Path(config.output).parent, config.report_dir) and Path(config.output).name in (
                "report.json", "per_class.csv", "confusion.png", "calibration.png", "mistakes.png"):
            raise UserError(f"--output {config.output} is one of the files --report-dir writes; choose another name")


def check_predict(config: PredictConfig) -> None:
    for path in config.inputs:
        check_named(path, "an image path")
    if config.output is not None:
        reads = (checkpoint_read(config.checkpoint), *(Read(Path(path), "an input to classify")
                                                        for path in config.inputs))
        check_file(config.output, "--output", reads)


def check_export(config: ExportConfig, payload: dict | None = None, sidecar: Path | None = None) -> None:
    """--output and its metadata file; against the data set's folders too once the checkpoint is loaded."""
    reads = (checkpoint_read(config.checkpoint),)
    if payload is not None:
        reads += data_reads(DataSpec.of(payload["config"], config.data_dir))
    check_file(config.output, "--output", reads)
    if sidecar is not None:
        check_file(sidecar, f"--output {config.output}'s metadata file", reads)


def check_summary(run_dirs: list[str], output: str | None) -> None:
    for path in run_dirs:
        check_named(path, "a run folder path")
    if output is not None:
        reads = tuple(Read(Path(folder) / name, f"a summarised run's {name}") for folder in run_dirs
                      for name in ("config.json", "metrics.csv"))
        check_file(output, "--output", reads)


def check_train(config: TrainConfig, run_dir_typed: bool, resume: Path | None = None,
                payload: dict | None = None) -> ResumeTarget | None:
    """Where a training run will write, before it reads the data; for a resume, where it continues.
    (A --seeds set's folders: training/run_folder.check_seed_dirs.)"""
    reads = data_reads(DataSpec.of(config.to_dict()))
    if resume is not None:
        return resume_target(resume, config.run_dir if run_dir_typed else None, payload, (checkpoint_read(resume),
                                                                                          *reads))
    if config.run_dir is not None:  # else runs/<model>-<start time>: a new name
        check_new_run_dir(config.run_dir, reads)
    return None
