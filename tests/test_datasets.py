import pickle

import numpy as np
import pytest
import torch
from conftest import CLASSES, synthetic_images, write_batches, write_image_folder

from resnet_cifar.data import image_folders
from resnet_cifar.data.datasets import Split, load_cifar10, split_validation
from resnet_cifar.data.image_folders import CACHE_NAME, read_image_folder
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


def test_image_folder_matches_batches(tmp_path):
    root = write_image_folder(tmp_path / "img", n_train=30, n_test=10)
    data = load_cifar10(root, download=False)
    assert data.classes == CLASSES  # sorted folder names
    assert data.train.images.shape == (30, 3, 32, 32) and data.test.images.shape == (10, 3, 32, 32)
    images, labels = synthetic_images(30, 0)
    # The same multiset of (image, label) pairs, in class order.
    order = np.argsort(labels, kind="stable")
    assert torch.equal(data.train.labels, torch.from_numpy(labels[order]))
    assert torch.equal(data.train.images, torch.from_numpy(images[order]))


def test_image_folder_is_cached_and_cache_invalidated(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "img", n_train=20, n_test=10)
    first = read_image_folder(root)
    assert (root / CACHE_NAME).exists()

    def no_decoding(path, size=None):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(image_folders, "decode_image", no_decoding)
    second = read_image_folder(root)
    assert np.array_equal(first.train_x, second.train_x) and second.mean == first.mean
    monkeypatch.undo()

    victim = next((root / "train").rglob("*.png"))
    victim.unlink()  # the tree changed: the cache must not be used
    third = read_image_folder(root)
    assert len(third.train_y) == 19


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the image arrays: only zipfile's CRC-32 can notice
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=["truncated", "flipped-byte"])
def test_a_damaged_cache_is_rebuilt(tmp_path, damage):
    root = write_image_folder(tmp_path / "img", n_train=20, n_test=10)
    first = read_image_folder(root)
    damage(root / CACHE_NAME)
    second = read_image_folder(root)  # no BadZipFile: decoded again and the cache rewritten
    assert np.array_equal(first.train_x, second.train_x)
    assert np.array_equal(first.test_y, second.test_y)
    assert image_folders.load_cache(root / CACHE_NAME, image_folders.fingerprint(
        {split: image_folders.list_split(root, split) for split in ("train", "test")}, None)) is not None


def test_processes_starting_together_decode_once(tmp_path, monkeypatch):
    import threading

    root = write_image_folder(tmp_path / "img", n_train=20, n_test=10)
    decoded, real_decode = [], image_folders.decode_split
    monkeypatch.setattr(image_folders, "decode_split", lambda *a: decoded.append(1) or real_decode(*a))
    results = []
    threads = [threading.Thread(target=lambda: results.append(read_image_folder(root))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 3 and all(np.array_equal(r.train_x, results[0].train_x) for r in results)
    assert len(decoded) == 2  # train and test, once: the others waited for the lock and read the cache
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == [
        CACHE_NAME, CACHE_NAME + ".lock"]  # no temporary file left behind


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

