"""ResNets on CIFAR-10, CIFAR-100 and folders of small images: models, training, evaluation, export.

    import resnet_cifar
    resnet_cifar.list_models()
    model = resnet_cifar.build_model("resnet18", num_classes=10)
    summary = resnet_cifar.train(model="resnet20", recipe="fast", epochs=1, data_dir="data")
    report = resnet_cifar.evaluate(summary["checkpoint"])

The names below are loaded on first use, so that importing one part of the package (its models,
say) does not load the command line and everything under it.
"""
from __future__ import annotations

from typing import Any

__all__ = ["list_models", "build_model", "Checkpoint", "load_checkpoint", "train", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from resnet_cifar import api

        return getattr(api, name)
    raise AttributeError(f"module 'resnet_cifar' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API's names with the module's own, for dir() and a notebook's tab completion."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
