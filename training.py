"""Training: `train_model(config, data, run_dir)` trains (or resumes) a run and writes its files.

The loop lives in the `resnet_cifar.training` package; this module is its face in a checkout.
"""
from resnet_cifar.training.epoch import NonFiniteLoss, train_one_epoch
from resnet_cifar.training.loop import Interrupted, train_model
from resnet_cifar.training.step import train_step

__all__ = ["train_model", "train_one_epoch", "train_step", "Interrupted", "NonFiniteLoss"]
