"""--seeds: one run per seed into RUN_DIR/seed<N>/, then the mean ± std of their final accuracy; a
set that was stopped is finished by the same command."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.datasets import DataSpec
from resnet_cifar.errors import UserError
from resnet_cifar.results.seed_summary import SeedSummary, write_summary
from resnet_cifar.runfiles import run_files
from resnet_cifar.runfiles.checkpoints import load_checkpoint
from resnet_cifar.runfiles.claim import claim
from resnet_cifar.runfiles.destinations import check_train, data_reads, writable_path
from resnet_cifar.runfiles.run_files import create_run_dir, seed_run_dir
from resnet_cifar.training.resume import recorded_options, resume_config
from resnet_cifar.training.run import ResolvedRun, run_training
from resnet_cifar.training.run_folder import check_seed_dirs, on_main
from resnet_cifar.utils.distributed import Distributed


def train_seeds(run: ResolvedRun, dist: Distributed, finish_hint: str) -> int:
    """One run per seed into RUN_DIR/seed<N>/ (run.config.run_dir), then the final test accuracies' mean ± std. The same
    command again finishes an interrupted set: finished seeds are kept, the interrupted one resumes
    from its last.pt, the rest train. finish_hint: the line that says how to finish a stopped set."""
    config, explicit, seeds = run.config, set(run.explicit), list(run.seeds)
    root = writable_path(Path(config.run_dir))  # the caller names it (rank 0's default name on every rank)
    reads = data_reads(DataSpec.of(config.to_dict()))
    on_main(dist, lambda: check_seed_dirs(root, seeds, reads))
    say = print if dist.is_main else (lambda *args, **kwargs: None)
    hint = f"finish the set with: {finish_hint}"
    with contextlib.ExitStack() as held:
        if dist.is_main:
            create_run_dir(root)
            held.enter_context(claim(root))
            check_seed_dirs(root, seeds, reads)  # again, now that no other process writes here
        accuracies, split = [], "test"
        for seed in seeds:
            folder = seed_run_dir(root, seed)
            seed_config = TrainConfig.from_dict({**config.to_dict(), "seed": seed, "run_dir": str(folder)})
            finished = finished_seed(folder, seed_config, explicit) if (folder / "last.pt").exists() else None
            if finished is not None:
                say(f"seed {seed}: finished before, in {folder}")
                code, summary = 0, finished
            elif (folder / "last.pt").exists():
                say(f"seed {seed}: resuming {folder / 'last.pt'}")
                payload = load_checkpoint(folder / "last.pt")
                resumed = resume_config(TrainConfig.from_dict(payload["config"]), seed_config, explicit)
                continued = ResolvedRun(resumed, run.explicit, run.launch, folder / "last.pt", payload,
                                        target=check_train(resumed, False, folder / "last.pt", payload),
                                        recorded=recorded_options(folder, payload, resumed, explicit))
                code, summary = run_training(continued, dist=dist, first_in_process=seed == seeds[0],
                                             resume_hint=hint)
            else:
                say(f"seed {seed}: run dir {folder}")
                code, summary = run_training(ResolvedRun(seed_config, run.explicit, run.launch), dist=dist,
                                             first_in_process=seed == seeds[0], resume_hint=hint)
            if code != 0 or summary.get("accuracy") is None:
                say(f"seed {seed} did not finish; {hint}", file=sys.stderr)
                return code or 1
            accuracies.append(summary["accuracy"])
            split = summary["split"]
        result = SeedSummary(tuple(seeds), tuple(accuracies), split)
        say(result.line(config.tta))
        if dist.is_main:
            print(f"wrote {write_summary(root, result, config.tta)}")
    return 0


def finished_seed(folder: Path, config: TrainConfig, explicit: set[str]) -> dict | None:
    """A seed's run that finished before: its final accuracy as its last metrics row holds it, once
    the command's options are checked against the run's (as a resume checks them)."""
    payload = load_checkpoint(folder / "last.pt")
    resumed = resume_config(TrainConfig.from_dict(payload["config"]), config, explicit)
    if payload["epoch"] < resumed.epochs:
        return None
    rows = run_files.MetricsLog(folder / "metrics.csv").rows()
    split = "test" if rows and rows[-1].get("test_acc") else "val"
    accuracy = rows[-1].get(f"{split}_acc") if rows else None
    if not accuracy:
        raise UserError(f"{folder} finished but its metrics.csv holds no final accuracy; move it away and run the "
                        f"command again to train that seed anew")
    return {"accuracy": float(accuracy), "split": split}
