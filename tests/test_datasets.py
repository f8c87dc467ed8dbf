import pickle

import pytest
import torch
from helpers import CLASSES, synthetic_images, write_batches, write_image_folder

from resnet_cifar.data.datasets import Split, load_cifar10, split_validation
from resnet_cifar.errors import UserError

# --- readers ---------------------------------------------------------------------------------

def test_read_batches_returns_exact_arrays(batches_dir):
    data = load_cifar10(batches_dir, download=False)
    train_x, train_y = synthetic_images(250, 0)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (250, 3, 32, 32)
    assert torch.equal(data.train.images, torch.from_numpy(train_x))
    assert torch.equal(data.train.labels, torch.from_numpy(train_y))
    assert data.test.images.shape == (100, 3, 32, 32)
    assert data.classes == CLASSES


def test_batches_folder_may_be_given_directly(batches_dir):
    data = load_cifar10(batches_dir / "cifar-10-batches-py", download=False)
    assert len(data.train) == 250


def test_str_keys_as_written_by_repackers(tmp_path):
    folder = write_batches(tmp_path / "b")
    for name in ["data_batch_1", "test_batch"]:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f)
        with open(folder / name, "wb") as f:
            pickle.dump({k.decode(): v for k, v in batch.items()}, f, protocol=4)
    assert len(load_cifar10(folder, download=False).train) == 250


def test_load_order_prefers_batches_then_images(tmp_path):
    write_image_folder(tmp_path, n_train=20, n_test=10)
    assert len(load_cifar10(tmp_path, download=False).train) == 20
    write_batches(tmp_path / "cifar-10-batches-py")
    assert len(load_cifar10(tmp_path, download=False).train) == 250


def test_missing_data_without_download_names_what_was_looked_for(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py.*train/<class>.*--data-dir"):
        load_cifar10(tmp_path, download=False)


def test_validation_split_is_seeded_and_disjoint():
    split = Split(torch.arange(100).view(100, 1, 1, 1).expand(100, 3, 32, 32).to(torch.uint8),
                  torch.arange(100))
    train, val = split_validation(split, 10, seed=1)
    train2, val2 = split_validation(split, 10, seed=1)
    assert len(train) == 90 and len(val) == 10
    assert torch.equal(val.labels, val2.labels)
    assert not set(val.labels.tolist()) & set(train.labels.tolist())
    _, val3 = split_validation(split, 10, seed=2)
    assert not torch.equal(val.labels, val3.labels)
    with pytest.raises(UserError, match="--val-size must be between 0 and 99"):
        split_validation(split, 100, seed=0)

