"""CIFAR-10 (and CIFAR-100, and folders of images) loaded as uint8 tensors, and their augmentation.

The data layer lives in the `resnet_cifar.data` package; this module is its face in a checkout.
"""
from resnet_cifar.data.augmentations import Augmentation, random_crop_flip
from resnet_cifar.data.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    Dataset,
    DataSpec,
    Split,
    load_cifar10,
    load_dataset,
    split_validation,
)
from resnet_cifar.data.loader import BatchLoader, Normalizer

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "DataSpec", "Dataset", "Split", "load_cifar10",
           "load_dataset", "split_validation", "Augmentation", "random_crop_flip", "BatchLoader", "Normalizer"]
