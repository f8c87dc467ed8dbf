"""What a run reports: each epoch's evaluation, its metrics.csv row and log line, and the final
reports a finished run leaves in its folder."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from resnet_cifar.config import EvalConfig
from resnet_cifar.data.datasets import Dataset
from resnet_cifar.results.evaluation import (
    EvalResult,
    ReportSource,
    assemble_report,
    choose_split,
    evaluate,
    evaluate_checkpoint,
    write_report_dir,
)
from resnet_cifar.results.tensorboard_log import TensorBoardLog
from resnet_cifar.training.assembly import RunParts
from resnet_cifar.training.checkpoint_state import EpochTotals

Log = Callable[[str], None]


def format_epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"lr {row['lr']:.4g}",
             f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"]
    if row.get("val_loss") is not None:
        parts.append(f"val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%")
    if row.get("test_loss") is not None:
        parts.append(f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:.2f}%")
    if row.get("ema_test_acc") is not None:
        parts.append(f"ema test acc {100 * row['ema_test_acc']:.2f}%")
    if row.get("test_loss") is not None and row.get("tta", "none") != "none":
        parts.append(f"(tta {row['tta']})")
    parts.append(f"{row['seconds']:.1f}s {row['img_per_s']:.0f} img/s")
    return "  ".join(parts)


def evaluate_epoch(parts: RunParts, should_stop: Callable[[], bool],
                   keep_predictions_of: str | None = None) -> dict[str, EvalResult]:
    """The raw model on val/test and, with --ema, the moving average too ("ema_val", "ema_test");
    the raw model's result on the split keep_predictions_of names holds its logits (for the final report).

    Under torchrun each process evaluates its share of each split with rank 0's BatchNorm
    statistics (the model rank 0 saves) and the sums are added up: every image counted once."""
    models = {"": parts.ctx.eval_model}
    parts.dist.broadcast_buffers(parts.model)
    if parts.ctx.ema is not None:
        parts.dist.broadcast_buffers(parts.ctx.ema.module)
        models["ema_"] = parts.ctx.ema.module
    return {prefix + name: evaluate(model, loader, parts.device, parts.precision, parts.config.num_classes,
                                    should_stop, tta=parts.config.tta, dist=parts.dist,
                                    tta_fraction=parts.config.tta_fraction,
                                    keep_predictions=prefix + name == keep_predictions_of)
            for prefix, model in models.items() for name, loader in parts.eval_loaders.items()}


def epoch_row(epoch: int, lr: float, totals: EpochTotals, results: dict[str, EvalResult], tta: str) -> dict:
    """One metrics.csv row (accuracies 0-1); results holds "val"/"test" and "ema_val"/"ema_test",
    or nothing after an epoch that --eval-every skips (its val/test columns stay empty)."""
    val, test = results.get("val"), results.get("test")
    ema = {f"{name}_{kind}": getattr(result, "accuracy" if kind == "acc" else "loss")
           for name, result in results.items() if name.startswith("ema_") for kind in ("loss", "acc")}
    return {**ema, "tta": tta,
        "epoch": epoch + 1, "lr": lr,
        "train_loss": totals.loss_sum / max(1, totals.seen), "train_acc": totals.correct / max(1, totals.seen),
        "val_loss": val.loss if val else None, "val_acc": val.accuracy if val else None,
        "test_loss": test.loss if test else None, "test_acc": test.accuracy if test else None,
        "seconds": totals.seconds, "img_per_s": totals.seen / max(1e-9, totals.seconds),
        # Training plus every evaluation of the epoch (EMA and TTA included): the epoch's wall time
        # but for checkpoint writing and the process's start-up.
        "epoch_seconds": totals.seconds + sum(result.seconds for result in results.values()),
    }


def write_final_reports(parts: RunParts, data: Dataset, run_dir: Path, board: TensorBoardLog | None,
                        log: Log, final: EvalResult | None = None, epochs_done: int = 0) -> None:
    """The --mode eval --report-dir report of last.pt in run_dir/report/ (and of best.pt, when the
    run kept one, in run_dir/report-best/), so a finished run explains itself; on the test set, or
    on the validation images where the data has no test set.

    final: the last epoch's evaluation of that split with its logits; last.pt holds those weights,
    so its report is built from them instead of a second pass over the split."""
    config = parts.config
    split_name = parts.report_split
    split = choose_split(config.to_dict(), data, split_name)
    kept = final.predictions if final is not None else None
    # Reused only in the split's order: mistakes.png pairs the logits with the split's images.
    reuse = kept is not None and torch.equal(kept.labels, split.labels.cpu())
    for name, folder in (("last.pt", "report"), ("best.pt", "report-best")):
        if not (run_dir / name).exists():
            continue
        if name == "last.pt" and reuse:
            source = ReportSource(str(run_dir / name), config.model, epochs_done, "raw", config.tta, split_name,
                                  str(parts.device), parts.precision)
            report = assemble_report(source, kept, list(data.classes), final.seconds)
            write_report_dir(run_dir / folder, report, kept, split.images, list(data.classes))
        else:
            eval_config = EvalConfig(checkpoint=str(run_dir / name), data_dir=config.data_dir, device=config.device,
                                     precision=config.precision, channels_last=config.channels_last,
                                     tta=config.tta, tta_fraction=config.tta_fraction, split=split_name,
                                     report_dir=str(run_dir / folder))
            report = evaluate_checkpoint(eval_config, data=data)
        log(f"report of {name} ({split_name} top-1 {100 * report['accuracy']:.2f}%, tta {config.tta}): "
            f"{run_dir / folder}")
        if board is not None and name == "last.pt":
            board.log_image("confusion", run_dir / folder / "confusion.png", report["epoch"])
