"""The run's folder: chosen, created and claimed before the first file is written, and put back as it
was when a start saves no checkpoint."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.datasets import DataSpec
from resnet_cifar.errors import UserError
from resnet_cifar.runfiles import run_files
from resnet_cifar.runfiles.claim import Claim, claim
from resnet_cifar.runfiles.destinations import (
    Read,
    ResumeTarget,
    check_named,
    check_new_run_dir,
    check_not_read,
    data_reads,
)
from resnet_cifar.runfiles.places import abandoned_start, entries, holds_run, place, writable_path
from resnet_cifar.runfiles.run_files import create_run_dir, default_run_dir, seed_run_dir
from resnet_cifar.utils.distributed import Distributed


def on_main(dist: Distributed, decide: Callable[[], Any]) -> Any:
    """Rank 0's answer to decide() (or its error) on every rank: one decision about the file system."""
    outcome: tuple[Any, str | None] = (None, None)
    if dist.is_main:
        try:
            outcome = (decide(), None)
        except UserError as e:
            outcome = (None, str(e))
    answer, error = dist.broadcast_object(outcome if dist.is_main else None)
    if error is not None:
        raise UserError(error)
    return answer


def remove_if_unused(run_dir: Path, created: bool) -> None:
    """Undo a run directory that never got a checkpoint, so that a failed or stopped start leaves
    no files: the folder goes too when this command created it."""
    if (run_dir / "last.pt").exists() or (run_dir / "best.pt").exists():
        return
    run_files.remove_run_files(run_dir)
    if not created:
        return
    try:
        run_dir.rmdir()
    except OSError:
        pass  # it holds files we did not write: leave them alone


def prepare_run_dir(config: TrainConfig, target: ResumeTarget | None, resume_path: Path | None,
                    dist: Distributed) -> tuple[Path, bool, TrainConfig, Claim | None]:
    """The run directory, whether this call created it, the config with it, and rank 0's claim on
    it (None on the other ranks). Rank 0 decides (the default name holds its clock), creates and
    claims it. A resume continues in the checkpoint's own folder when it is that run's last.pt;
    else in a new folder that starts with the run's metrics so far and records where it came from,
    leaving that run as it is. A folder left by a start that saved no checkpoint is cleared first."""
    held: list[Claim] = []

    def decide() -> tuple[str, bool, dict | None]:
        if target is not None and target.in_place:
            held.append(claim(target.run_dir))
            return str(target.run_dir), False, None
        typed = target.run_dir if target is not None else config.run_dir
        run_dir = writable_path(Path(typed)) if typed is not None else default_run_dir(config.model)
        reads = data_reads(DataSpec.of(config.to_dict()))
        created = not run_dir.exists()
        create_run_dir(run_dir)
        held.append(claim(run_dir))
        try:
            # Checked when the run was resolved; again now that no other process writes here, for one
            # that finished a run in it between that check and this claim.
            check_new_run_dir(run_dir, reads)
            if abandoned_start(run_dir):
                print(f"note: {run_dir} holds a start that saved no checkpoint; starting anew in it", file=sys.stderr)
                run_files.remove_run_files(run_dir)
            if target is not None:
                parent_rows = run_files.MetricsLog(Path(target.origin["run_dir"]) / "metrics.csv").rows()
                run_files.MetricsLog(run_dir / "metrics.csv").start_from(parent_rows)
                print(target.describe(resume_path, run_dir))
        except BaseException:
            held.pop().release()
            remove_if_unused(run_dir, created)
            raise
        return str(run_dir), created, target.origin if target is not None else None

    run_dir, created, origin = on_main(dist, decide)
    config = replace(config, run_dir=run_dir, resumed_from=origin) if origin is not None else \
        replace(config, run_dir=run_dir) if config.run_dir is not None else config
    return Path(run_dir), created, config, (held[0] if held else None)


def check_seed_dirs(root: Path, seeds: list[int], reads: tuple[Read, ...]) -> None:
    """Every seed's folder of a --seeds run, before the first seed trains. A set that was stopped
    (no seeds.json yet) is finished by the same command: its seeds' folders with a last.pt go on."""
    check_named(root, "--run-dir")
    root, target = Path(root), place(root)
    if (target / "seeds.json").exists():
        raise UserError(f"--run-dir {root} already holds a finished --seeds set (seeds.json); choose another "
                        f"--run-dir")
    folders = {seed_run_dir(target, seed).name for seed in seeds}
    ours = target.is_dir() and not holds_run(target) and all(e.name in folders for e in entries(target))
    if not ours:
        check_new_run_dir(root, reads)
    for seed in seeds:
        folder = seed_run_dir(root, seed)
        if (place(folder) / "last.pt").is_file():
            check_not_read(folder, "--run-dir", reads)
            recorded = _recorded_seed(place(folder))
            if recorded != seed:
                what = f"a run of seed {recorded}" if recorded is not None else "a run that is not of a --seeds set"
                raise UserError(f"--run-dir {folder} already holds {what}, not this set's seed {seed}; choose "
                                f"another --run-dir")
            continue  # resumed or kept, once its options are compared with the command's
        check_new_run_dir(folder, reads)


def _recorded_seed(folder: Path) -> int | None:
    """The seed a run folder's config.json records, when it was one of a --seeds set (its run_dir
    is its folder seed<N>); None otherwise."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("seed"), int):
        return None
    return config["seed"] if Path(str(config.get("run_dir"))).name == folder.name else None
