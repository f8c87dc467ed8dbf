"""CIFAR-100 and folders of any class count and image size: reading, refusals, and every mode
(train, eval, predict, export) through the command line."""
import json

import numpy as np
import pytest
import torch
from helpers import run_cli, synthetic_images, write_cifar100, write_image_folder

from resnet_cifar.data.cifar100_classes import COARSE_CLASSES, FINE_CLASSES, SUPERCLASS_OF
from resnet_cifar.data.datasets import CIFAR100_MEAN, CIFAR100_STD, DataSpec, load_dataset
from resnet_cifar.data.image_folders import channel_stats
from resnet_cifar.errors import UserError
from resnet_cifar.runfiles.checkpoints import load_checkpoint

THREE = ("apple", "kiwi", "plum")
SEVEN = tuple(f"kind{i}" for i in range(7))


def cifar100_dir(tmp_path, **kwargs):
    write_cifar100(tmp_path / "data" / "cifar-100-python", **kwargs)
    return tmp_path / "data"


# --- reading ----------------------------------------------------------------------------------

def test_cifar100_pickles_fine_and_coarse(tmp_path):
    data_dir = cifar100_dir(tmp_path)
    fine = load_dataset(DataSpec("cifar100", str(data_dir), download=False))
    images, labels = synthetic_images(300, 0, num_classes=100)
    assert fine.classes == FINE_CLASSES and fine.kind == "cifar100" and fine.image_size == 32
    assert torch.equal(fine.train.images, torch.from_numpy(images))
    assert torch.equal(fine.train.labels, torch.from_numpy(labels)) and len(fine.test) == 100
    assert (fine.mean, fine.std) == (CIFAR100_MEAN, CIFAR100_STD)
    coarse = load_dataset(DataSpec("cifar100", str(data_dir), labels="coarse", download=False))
    assert coarse.classes == COARSE_CLASSES
    expected = [COARSE_CLASSES.index(SUPERCLASS_OF[FINE_CLASSES[i]]) for i in labels]
    assert coarse.train.labels.tolist() == expected


def test_cifar100_as_image_folders_maps_coarse_labels(tmp_path):
    root = write_image_folder(tmp_path / "img", n_train=200, n_test=100, classes=FINE_CLASSES)
    fine = load_dataset(DataSpec("cifar100", str(root), download=False))
    coarse = load_dataset(DataSpec("cifar100", str(root), labels="coarse", download=False))
    assert fine.classes == FINE_CLASSES and coarse.classes == COARSE_CLASSES
    names = [COARSE_CLASSES[i] for i in coarse.train.labels.tolist()]
    assert names == [SUPERCLASS_OF[FINE_CLASSES[i]] for i in fine.train.labels.tolist()]
    assert (fine.mean, fine.std) == (CIFAR100_MEAN, CIFAR100_STD)  # published, not the copy's


def test_folder_of_three_classes_at_48_pixels(tmp_path):
    root = write_image_folder(tmp_path / "img", n_train=30, n_test=12, classes=THREE, size=48)
    data = load_dataset(DataSpec("folder", str(root)))
    assert data.classes == THREE and data.image_size == 48 and data.train.images.shape == (30, 3, 48, 48)
    pixels = data.train.images.double() / 255
    assert data.mean == pytest.approx(pixels.mean((0, 2, 3)).tolist(), abs=1e-4)
    assert data.std == pytest.approx(pixels.std((0, 2, 3), correction=0).tolist(), abs=1e-4)
    assert (root / ".cifar-cache.npz").exists()


def test_channel_stats_by_hand():
    images = np.zeros((2, 3, 2, 2), dtype=np.uint8)
    images[0, 0] = 255  # red: half of its pixels at 1.0, half at 0.0
    mean, std = channel_stats(images)
    assert mean == (0.5, 0.0, 0.0) and std == (0.5, 0.0, 0.0)


def test_mixed_sizes_need_image_size_which_resizes_once(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "img", n_train=21, n_test=0, classes=SEVEN, size=20)
    odd = sorted((root / "train" / "kind3").iterdir())[0]
    Image.new("RGB", (40, 30), (200, 10, 10)).save(odd)
    with pytest.raises(UserError, match=r"differ in size: .* is 20x20, .*kind3.* is 40x30; pass --image-size N"):
        load_dataset(DataSpec("folder", str(root)))
    data = load_dataset(DataSpec("folder", str(root), image_size=16))
    assert data.train.images.shape == (21, 3, 16, 16) and data.test is None
    assert (root / ".cifar-cache-16px.npz").exists()


@pytest.mark.parametrize("case, spec, message", [
    ("one class", DataSpec("folder"), "needs at least 2 class folders, found 1"),
    ("no folders", DataSpec("folder"), "no image folders in .*: --dataset folder reads .*/train/<class>/"),
    ("missing meta", DataSpec("cifar100", download=False), "incomplete CIFAR-100 in .*: missing meta"),
    ("cifar100 missing", DataSpec("cifar100", download=False), "CIFAR-100 not found: looked for .*cifar-100-python"),
    ("7 classes as cifar10", DataSpec("cifar10", download=False), "hold 7 classes, but CIFAR-10 has 10; .*folder"),
    ("coarse on cifar10", DataSpec("cifar10", labels="coarse"), "--labels coarse is for --dataset cifar100"),
    ("size on cifar100", DataSpec("cifar100", image_size=64), "--image-size is for --dataset folder"),
])
def test_bad_data_is_one_line(tmp_path, case, spec, message):
    root = tmp_path / "data"
    if case == "one class":
        write_image_folder(root, n_train=4, n_test=0, classes=("only",))
    elif case == "missing meta":
        write_cifar100(root / "cifar-100-python", n_train=20, n_test=10, meta=False)
    elif case == "7 classes as cifar10":
        write_image_folder(root, n_train=14, n_test=7, classes=SEVEN)
    root.mkdir(exist_ok=True)
    with pytest.raises(UserError, match=message):
        load_dataset(DataSpec(spec.kind, str(root), spec.labels, spec.image_size, spec.download))


# --- every mode through the command line --------------------------------------------------------

def folder_args(data_dir, run_dir, *extra):
    return ["--mode", "train", "--dataset", "folder", "--model", "resnet20", "--data-dir", data_dir,
            "--run-dir", run_dir, "--batch-size", "16", "--epochs", "1", "--quiet", "--precision", "fp32", *extra]


@pytest.mark.slow
def test_a_seven_class_folder_of_40_pixel_images_trains_evaluates_predicts_and_exports(tmp_path, capsys):
    pytest.importorskip("safetensors")
    root = write_image_folder(tmp_path / "img", n_train=70, n_test=21, classes=SEVEN, size=40)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *folder_args(root, run_dir))
    assert code == 0, err
    payload = load_checkpoint(run_dir / "last.pt")
    assert (payload["dataset"], payload["classes"], payload["image_size"]) == ("folder", list(SEVEN), 40)
    assert payload["model_state"]["fc.weight"].shape == (7, 64)
    assert payload["mean"] == pytest.approx(list(load_dataset(DataSpec("folder", str(root))).mean))

    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt",
                             "--report-dir", tmp_path / "report")
    assert code == 0, err
    assert "on 21 test images" in out and "top-5" not in out.splitlines()[0]
    rows = (tmp_path / "report" / "per_class.csv").read_text().splitlines()
    assert len(rows) == 1 + 7

    code, out, err = run_cli(capsys, "--mode", "predict", "--checkpoint", run_dir / "last.pt", root / "test" / "kind2")
    assert code == 0, err
    assert all(line.split(": ")[1].split(" ")[0] in SEVEN for line in out.splitlines())
    assert "resized" not in err  # 40x40 images are the model's size

    exported = tmp_path / "model.safetensors"
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", run_dir / "last.pt",
                             "--format", "safetensors", "--output", exported)
    assert code == 0, err
    assert "on 21 test images match" in out
    sidecar = json.loads(exported.with_suffix(".json").read_text())
    assert (sidecar["classes"], sidecar["image_size"], sidecar["dataset"]) == (list(SEVEN), 40, "folder")


@pytest.mark.slow
def test_a_folder_without_test_images_trains_and_evaluates_on_held_out_images(tmp_path, capsys):
    root = write_image_folder(tmp_path / "img", n_train=60, n_test=0, classes=THREE, size=24)
    code, _, err = run_cli(capsys, *folder_args(root, tmp_path / "refused"))
    assert code == 2 and "has no test/ folder: pass --val-size N" in err and not (tmp_path / "refused").exists()
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *folder_args(root, run_dir, "--val-size", "12"))
    assert code == 0, err
    assert "done: val accuracy" in out and (run_dir / "report" / "confusion.png").exists()
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt")
    assert code == 0 and "on 12 val images" in out
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--split", "test")
    assert code == 2 and "has no test/ folder; use --split val" in err
    code, out, _ = run_cli(capsys, "--mode", "summary", run_dir)
    assert code == 0 and "resnet20 seed on folder seed 0, epoch 1/1, final val " in out
    code, out, err = run_cli(capsys, *folder_args(root, tmp_path / "seeds", "--val-size", "12", "--seeds", "0", "1"))
    assert code == 0 and "final val accuracy over 2 seeds" in out, err


def test_a_ten_class_checkpoint_on_hundred_class_data_is_one_line(batches_dir, tmp_path, capsys):
    from helpers import tiny_train_args

    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--max-steps", "1"))[0] == 0
    hundred = cifar100_dir(tmp_path / "c100", n_train=100, n_test=50)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--data-dir", hundred)
    # The checkpoint says CIFAR-10: its batches are not in the CIFAR-100 folder.
    assert code == 2 and "CIFAR-10 not found" in err
    images = write_image_folder(tmp_path / "img100", n_train=100, n_test=100, classes=FINE_CLASSES)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt", "--data-dir", images)
    assert code == 2 and "hold 100 classes, but CIFAR-10 has 10" in err
    folder_run = tmp_path / "folder-run"
    payload = load_checkpoint(run_dir / "last.pt")
    payload["config"]["dataset"] = "folder"
    from resnet_cifar.runfiles.checkpoints import save_checkpoint

    save_checkpoint(tmp_path / "as-folder.pt", payload)
    code, _, err = run_cli(capsys, "--mode", "eval", "--checkpoint", tmp_path / "as-folder.pt", "--data-dir", images)
    assert code == 2 and "has 100 classes but the checkpoint's resnet20 has 10" in err.splitlines()[0]
    code, _, err = run_cli(capsys, "--mode", "train", "--resume", tmp_path / "as-folder.pt", "--data-dir", images,
                           "--run-dir", folder_run)
    assert code == 2 and "has 100 classes but the checkpoint's run has 10" in err


@pytest.mark.slow
def test_cifar100_resume_is_bit_exact(tmp_path, capsys):
    data_dir = cifar100_dir(tmp_path, n_train=160, n_test=40)

    def train(run_dir, *extra):
        args = ["--mode", "train", "--dataset", "cifar100", "--model", "resnet20", "--data-dir", data_dir,
                "--run-dir", run_dir, "--batch-size", "32", "--epochs", "2", "--quiet", "--no-download",
                "--precision", "fp32", "--threads", "1", "--scheduler", "cosine", *extra]
        code, out, err = run_cli(capsys, *args)
        assert code == 0, err
        return out

    out = train(tmp_path / "straight")
    assert "training resnet20" in out
    train(tmp_path / "part", "--max-steps", "7")  # stops in the second epoch
    code, out, err = run_cli(capsys, "--mode", "train", "--resume", tmp_path / "part" / "last.pt", "--quiet")
    assert code == 0, err
    straight, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("straight", "part"))
    assert straight["model_state"]["fc.weight"].shape == (100, 64) and resumed["dataset"] == "cifar100"
    assert all(torch.equal(resumed["model_state"][k], v) for k, v in straight["model_state"].items())
    assert all(torch.equal(resumed["optimizer_state"]["state"][k]["momentum_buffer"], v["momentum_buffer"])
               for k, v in straight["optimizer_state"]["state"].items())


@pytest.mark.slow
def test_cifar100_eval_reads_at_100_classes(tmp_path, capsys):
    data_dir = cifar100_dir(tmp_path, n_train=100, n_test=200)
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "--mode", "train", "--dataset", "cifar100", "--model", "resnet20", "--data-dir",
                           data_dir, "--run-dir", run_dir, "--batch-size", "50", "--max-steps", "1", "--quiet",
                           "--no-download", "--precision", "fp32")
    assert code == 0, err
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt",
                             "--report-dir", tmp_path / "report")
    assert code == 0, err
    lines = out.splitlines()
    assert "on 200 test images" in lines[0] and "top-5" in lines[0]
    assert any(line.startswith("superclass accuracy") for line in lines)
    assert any(line.startswith("weakest classes of 100:") for line in lines)
    assert max(len(line) for line in lines) < 400  # no 100-column matrix
    assert len((tmp_path / "report" / "per_class.csv").read_text().splitlines()) == 1 + 100
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["superclasses"]["counts"]) == 20 and len(report["most_confused"]) <= 10


@pytest.mark.parametrize("args, classes", [
    (["--dataset", "cifar100"], 100), (["--dataset", "cifar100", "--labels", "coarse"], 20),
    (["--dataset", "folder"], "the number of class folders (the data set is not read)"), ([], 10),
])
def test_dry_run_names_the_class_count(capsys, args, classes):
    code, out, err = run_cli(capsys, "--mode", "train", "--model", "resnet56", "--recipe", "paper", *args, "--dry-run")
    assert code == 0, err
    assert json.loads(out)["config"]["num_classes"] == classes


@pytest.mark.parametrize("args, message", [
    (["--labels", "coarse"], "error: --labels coarse is for --dataset cifar100"),
    (["--dataset", "cifar100", "--image-size", "64"], "error: --image-size is for --dataset folder; CIFAR-100 images"),
    (["--dataset", "folder", "--image-size", "4"], "--image-size: expected an integer >= 8, got '4'"),
    (["--dataset", "imagenet"], "--dataset: invalid choice: 'imagenet' (choose from "),
])
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_data_options_that_do_not_apply_are_one_line(tmp_path, capsys, args, message, dry_run):
    code, _, err = run_cli(capsys, "--mode", "train", "--model", "resnet20", "--run-dir", tmp_path / "run", *args,
                           *dry_run)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_paper_recipe_trains_resnet56_on_an_official_cifar100_copy(tmp_path, capsys):
    data_dir = cifar100_dir(tmp_path, n_train=300, n_test=100)
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "--dataset", "cifar100", "--model", "resnet56", "--recipe", "paper",
                             "--data-dir", data_dir, "--run-dir", run_dir, "--max-steps", "2", "--quiet",
                             "--no-download", "--precision", "fp32")
    assert code == 0, err
    assert "training resnet56 (858,868 parameters)" in out and "recipe paper" in out
    payload = load_checkpoint(run_dir / "last.pt")
    assert payload["model_state"]["fc.weight"].shape == (100, 64) and payload["dataset"] == "cifar100"
    assert payload["mean"] == list(CIFAR100_MEAN) and payload["global_step"] == 2


def test_a_checkpoint_that_names_no_data_set_is_cifar10_at_32_pixels(batches_dir, tmp_path, capsys):
    from helpers import tiny_train_args

    from resnet_cifar.runfiles.checkpoints import save_checkpoint

    run_dir = tmp_path / "run"
    assert run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--max-steps", "1"))[0] == 0
    payload = load_checkpoint(run_dir / "last.pt")
    for key in ("dataset", "image_size"):
        del payload[key]
    for key in ("dataset", "labels", "image_size"):
        del payload["config"][key]
    old = run_dir / "old.pt"
    save_checkpoint(old, payload)
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", old)
    assert code == 0 and "on 100 test images" in out, err
    image = write_image_folder(tmp_path / "img", n_train=10, n_test=0) / "train" / "cat"
    code, out, err = run_cli(capsys, "--mode", "predict", "--checkpoint", old, image)
    assert code == 0 and "resized" not in err, err
    code, out, err = run_cli(capsys, "--mode", "train", "--resume", old, "--max-steps", "2", "--quiet",
                             "--run-dir", tmp_path / "continued")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "continued" / "last.pt")["global_step"] == 2
