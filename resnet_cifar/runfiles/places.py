"""Run folders and the places paths name: what marks a folder as a run's, and two spellings of one
place compared as that place."""
from __future__ import annotations

import os
from pathlib import Path

from resnet_cifar.runfiles.claim import LOCK_NAME
from resnet_cifar.utils.atomic_files import TEMP_MARKER

# The files of a run directory (and of a --seeds folder) that only that run writes.
RUN_FILES = ("last.pt", "best.pt", "config.json", "metrics.csv", "timings.json", "curves.png", "seeds.json")
REPORT_FOLDERS = ("report", "report-best")  # a run's final reports
# A folder holds a run (or a --seeds set of runs) when it holds one of these.
RUN_MARKERS = ("config.json", "metrics.csv", "last.pt", "seeds.json")
CHECKPOINTS = ("last.pt", "best.pt")
CACHE_PREFIX = ".cifar-cache"  # an image folder's decoded images (data/image_folders.py)



def place(path: str | Path) -> Path:
    """The place a path names: symlinks followed, `..` and `.` resolved, a tail that does not exist
    yet normalised (the way mkdir -p and open will walk it). Two spellings of one place are equal."""
    return Path(os.path.realpath(os.fspath(path)))


def writable_path(path: str | Path) -> Path:
    """The path to write in: as typed where its normal spelling leads to its place (runs/x/../R
    becomes runs/R), else the place itself (a link followed), so no folder is made on the way."""
    normal = Path(os.path.normpath(os.fspath(path)))
    return normal if place(normal) == place(path) else place(path)


def holds_run(folder: Path) -> bool:
    return any((Path(folder) / marker).exists() for marker in RUN_MARKERS)


def abandoned_start(folder: Path) -> bool:
    """A run folder whose run stopped before its first checkpoint (config.json, maybe metrics.csv
    and the like, no last.pt, best.pt or seeds.json): nothing in it can be resumed, so a new start
    may take its place."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() or any((folder / name).exists() for name in (*CHECKPOINTS,
                                                                                           "seeds.json")):
        return False
    return all(left_by_a_start(entry) for entry in folder.iterdir())


def left_by_a_start(entry: Path) -> bool:
    name = entry.name
    return ((name in RUN_FILES and entry.is_file()) or name == LOCK_NAME or TEMP_MARKER in name
            or name.startswith("events.out.tfevents"))


def entries(folder: Path) -> list[Path]:
    """What a folder holds, but a claim's lock file (which only says who writes in it)."""
    return [entry for entry in folder.iterdir() if entry.name != LOCK_NAME]


def same_place(a: Path, b: Path) -> bool:
    return place(a) == place(b)


def inside(path: Path, folder: Path) -> bool:
    return place(folder) in place(path).parents
