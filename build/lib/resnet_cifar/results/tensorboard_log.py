"""Optional TensorBoard event files in the run directory, through torch.utils.tensorboard."""
from __future__ import annotations

from pathlib import Path

from resnet_cifar.errors import UserError

# metrics.csv column -> TensorBoard tag
SCALARS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test", "ema_test_loss": "loss/ema_test",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val", "test_acc": "accuracy/test",
    "ema_test_acc": "accuracy/ema_test", "lr": "lr", "img_per_s": "img_per_s",
}


def require_tensorboard() -> None:
    """Fail before a run starts, in one line, when --tensorboard cannot work here."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard "
                        "(or drop --tensorboard)") from None


class TensorBoardLog:
    """Scalars per epoch (x axis: epoch) and, at the end, the confusion matrix as an image."""

    def __init__(self, run_dir: Path, purge_epoch: int | None = None):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_epoch)

    def log_epoch(self, row: dict) -> None:
        for column, tag in SCALARS.items():
            if row.get(column) is not None:
                self.writer.add_scalar(tag, float(row[column]), int(row["epoch"]))
        self.writer.flush()

    def log_image(self, tag: str, png: Path, epoch: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(tag, pixels, epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
