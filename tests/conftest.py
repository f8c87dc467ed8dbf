"""The suite's fixtures: tiny synthetic data sets (tests/helpers.py makes them), the precision cache."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_batches, write_image_folder


@pytest.fixture(autouse=True, scope="session")
def precision_cache(tmp_path_factory):
    """`--precision auto` caches its measurements: in a temporary folder of this test run, never in ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("precision-cache")
    previous = os.environ.get("RESNET_CIFAR_CACHE")
    os.environ["RESNET_CIFAR_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("RESNET_CIFAR_CACHE", None)
    else:
        os.environ["RESNET_CIFAR_CACHE"] = previous


@pytest.fixture
def batches_dir(tmp_path: Path) -> Path:
    """A data dir holding cifar-10-batches-py/ with 250 train and 100 test images."""
    write_batches(tmp_path / "data" / "cifar-10-batches-py")
    return tmp_path / "data"


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture(scope="module")
def module_batches(tmp_path_factory) -> Path:
    """A data dir holding cifar-10-batches-py/ (250 train, 100 test images), shared by a module's tests."""
    root = tmp_path_factory.mktemp("batches")
    write_batches(root / "cifar-10-batches-py")
    return root
