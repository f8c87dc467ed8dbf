"""What a run writes in its folder while it trains: config.json, metrics.csv, curves.png, the
checkpoints and TensorBoard's events. Rank 0 writes; the other ranks wait at each checkpoint."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from resnet_cifar.results.plots import CurvesPlot
from resnet_cifar.results.tensorboard_log import TensorBoardLog
from resnet_cifar.runfiles import checkpoints, run_files
from resnet_cifar.training.assembly import RunParts
from resnet_cifar.training.checkpoint_state import TrainState, build_payload
from resnet_cifar.training.epoch import NonFiniteLoss
from resnet_cifar.utils.timings import PhaseClock


def writes_in_background(device: torch.device, world_size: int) -> bool:
    """Whether checkpoints are written on a background thread while the next epoch trains.

    On an accelerator the training thread mostly waits for the device and the CPU cores are free:
    there the write overlaps training (bench/epoch_end.py, one core free: 0.08 s of a 0.22 s
    write left on the training thread). On the CPU the step already uses every core and a write
    beside it cost more than one before it (0.28 s against 0.18 s on 2 cores). Under torchrun
    rank 0 writes at once and the others wait for it, so that a restarted job always finds the
    checkpoint of the epoch before the failure.
    """
    return device.type != "cpu" and world_size == 1


class RunRecord:
    """The run folder's files, written as the run goes; a context for the checkpoint writer and
    the TensorBoard log, which finish their work when it ends."""

    def __init__(self, parts: RunParts, data, run_dir: Path, clock: PhaseClock, first_epoch: int):
        self.parts, self.data, self.run_dir, self.clock = parts, data, Path(run_dir), clock
        self.main = parts.dist.is_main
        self.metrics = run_files.MetricsLog(self.run_dir / "metrics.csv")
        self.curves = CurvesPlot(self.run_dir / "curves.png", self.metrics.rows)
        self.writer = checkpoints.CheckpointWriter(background=writes_in_background(parts.device,
                                                                                   parts.dist.world_size))
        # Events past the checkpoint's epoch are dropped: a resumed run rewrites them.
        self.board = (TensorBoardLog(self.run_dir, purge_epoch=first_epoch)
                      if parts.config.tensorboard and self.main else None)
        self._stack = contextlib.ExitStack()

    def start(self, options: dict, resumed_at: int | None) -> None:
        """config.json (options and what the run resolved on this machine); for a resumed run, the
        temporaries of a write cut off and the metrics rows past its checkpoint removed first."""
        if not self.main:
            return
        if resumed_at is not None:
            checkpoints.remove_stale_temporaries(self.run_dir)
            self.metrics.truncate_after(resumed_at)
        parts = self.parts
        measured = parts.precision_choice.figures if parts.precision_choice is not None else None
        run_files.write_config(self.run_dir, {**options, "resolved_device": str(parts.device),
                                              "resolved_precision": parts.precision,
                                              "resolved_channels_last": parts.channels_last,
                                              "auto_precision_img_per_s": measured,
                                              "world_size": parts.dist.world_size,
                                              "elastic_run_id": parts.dist.run_id})

    def record_length(self, iterations: int, epochs: int) -> None:
        """config.json's length after a --time-budget run was laid over other steps (loop.keep_to_budget)."""
        if not self.main:
            return
        path = self.run_dir / "config.json"
        options = json.loads(path.read_text(encoding="utf-8"))
        run_files.write_config(self.run_dir, {**options, "iterations": iterations, "epochs": epochs})

    def save(self, name: str, state: TrainState, wait: bool = False) -> Path:
        """Rank 0 writes; the others wait, so that none exits (and makes torchrun stop the job)
        while the file is being written. wait: the file is on disk when this returns."""
        path = self.run_dir / name
        model = self.parts.model
        if not all(bool(p.isfinite().all()) for p in model.parameters()):
            raise NonFiniteLoss(f"the weights became NaN/Inf in epoch {state.epoch + 1}; {name} was not "
                                f"overwritten (try a lower --lr or --clip-grad-norm)")
        with self.clock.phase("checkpoints"):
            self.parts.dist.broadcast_buffers(model)
            if self.main:
                self.writer.save(path, build_payload(self.parts, state, self.data))
                if wait:
                    self.writer.wait()
            self.parts.dist.barrier()
        return path

    def save_on_stop(self, state: TrainState) -> Path:
        """last.pt on disk and the curves up to date before the run says it stopped."""
        path = self.save("last.pt", state, wait=True)
        if self.main:
            self.draw_curves(force=True)
        return path

    def draw_curves(self, force: bool) -> None:
        with self.clock.phase("curves"):
            self.curves.update(force=force)

    def end_epoch(self, row: dict, final: bool) -> None:
        """The finished epoch's row in metrics.csv, the curves and TensorBoard."""
        if not self.main:
            return
        self.metrics.append(row)
        self.draw_curves(force=final)
        if self.board is not None:
            self.board.log_epoch(row)

    def wait(self) -> None:
        with self.clock.phase("checkpoints"):
            self.writer.wait()

    def __enter__(self) -> RunRecord:
        self._stack.enter_context(self.writer)
        if self.board is not None:
            self._stack.enter_context(self.board)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)
