"""Image-folder trees: decoding, the cache and its invalidation."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASSES, run_cli, synthetic_images, tiny_train_args, write_image_folder

from resnet_cifar.data import image_folders
from resnet_cifar.data.datasets import load_cifar10
from resnet_cifar.data.image_folders import CACHE_NAME, read_image_folder


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


def test_bad_image_folders(tmp_path, capsys):
    from PIL import Image

    def attempt(root):
        code, _, err = run_cli(capsys, *tiny_train_args(root, tmp_path / "run", "--batch-size", "4"))
        assert code == 2 and not (tmp_path / "run").exists()
        return err

    missing = write_image_folder(tmp_path / "missing", n_train=20, n_test=10)
    shutil.rmtree(missing / "test" / "truck")
    assert "truck missing from one of them" in attempt(missing)

    unreadable = write_image_folder(tmp_path / "unreadable", n_train=20, n_test=10)
    victim = sorted((unreadable / "train" / "cat").iterdir())[0]
    victim.write_bytes(b"not an image")
    assert f"unreadable image {victim}" in attempt(unreadable)

    wrong_size = write_image_folder(tmp_path / "size", n_train=20, n_test=10)
    victim = sorted((wrong_size / "test" / "dog").iterdir())[0]
    Image.new("RGB", (64, 48)).save(victim)
    assert f"image {victim} is 64x48, expected 32x32" in attempt(wrong_size)


@pytest.mark.parametrize("damage", ["dangling link", "empty file", "undecodable file", "unreadable folder"])
def test_a_damaged_tree_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch, damage):
    root = write_image_folder(tmp_path / "images", n_train=20, n_test=10)
    folder = root / "train" / "cat"
    victim = sorted(folder.iterdir())[0]
    if damage == "dangling link":
        victim.unlink()
        victim.symlink_to(tmp_path / "gone.png")
        expected = f"image {victim} is a broken link (to {tmp_path / 'gone.png'})"
    elif damage == "empty file":
        victim.write_bytes(b"")
        expected = f"image {victim} is an empty file"
    elif damage == "undecodable file":
        victim.write_bytes(b"\x89PNG but not really")
        expected = f"unreadable image {victim}: cannot identify image file"
    else:  # root reads any folder, so the refusal of the file system is simulated
        real = Path.iterdir

        def iterdir(path):
            if path == folder:
                raise PermissionError(13, "Permission denied")
            return real(path)

        monkeypatch.setattr(Path, "iterdir", iterdir)
        expected = f"cannot read image folder {folder}: Permission denied"
    code, out, err = run_cli(capsys, *tiny_train_args(root, tmp_path / "run", "--batch-size", "4"))
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {expected}"), err
    assert not (tmp_path / "run").exists()
