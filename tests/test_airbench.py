"""airbench94: the net, its whitening, the recipe's pieces (alternating flip, lookahead, BN-bias
groups, the schedule's shape, the fractional length) and the trainer's guarantees for it."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, run_cli, same_state, skip_unless_installed, synthetic_images, tiny_train_args, training_state

from resnet_cifar.config import TrainConfig
from resnet_cifar.data.augmentations import Augmentation
from resnet_cifar.data.datasets import CIFAR10_MEAN, CIFAR10_STD, Split
from resnet_cifar.data.loader import BatchLoader, Normalizer
from resnet_cifar.models.airbench import AirbenchNet
from resnet_cifar.models.registry import modeltype
from resnet_cifar.optim.lookahead import Lookahead
from resnet_cifar.optim.schedules import LRSchedule, build_optimizer, set_lrs
from resnet_cifar.recipes import apply_length, apply_recipe
from resnet_cifar.runfiles.checkpoints import load_checkpoint


def test_the_published_net_and_its_parameter_counts():
    model = modeltype("airbench94")
    parameters = list(model.named_parameters())
    assert sum(p.numel() for _, p in parameters) == 1_972_792
    fixed_scales = sum(p.numel() for name, p in parameters if "norm" in name and name.endswith("weight"))
    assert fixed_scales == 1_152 and sum(p.numel() for _, p in parameters) - fixed_scales == 1_971_640
    # Learned: all but the BN scales and the whitening filters (3 x 24 x 2 x 2).
    assert sum(p.numel() for _, p in parameters if p.requires_grad) == 1_971_640 - 288
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-12 and m.momentum == pytest.approx(0.4) for m in norms)
    first = model.groups[0].conv1.weight
    assert torch.equal(first[:24], torch.nn.init.dirac_(torch.empty(24, 24, 3, 3)))  # Dirac on the first c_in
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10) and modeltype("airbench94", 100).fc.out_features == 100


def test_whitening_decorrelates_the_patches():
    """The 24 filters are the covariance's eigenvectors scaled by 1/sqrt(eigenvalue + eps) and their
    negations: the first 12 outputs over the images' patches have covariance ~ diag(l / (l + eps))."""
    images, _ = synthetic_images(200, seed=0)
    x = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
    model = AirbenchNet()
    model.init_whitening(x)
    weight = model.whiten.weight
    assert torch.allclose(weight[12:], -weight[:12])
    out = torch.nn.functional.conv2d(x, weight[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = out.T @ out / len(out)
    assert torch.allclose(covariance, torch.diag(covariance.diag()), atol=1e-3)
    assert covariance.diag().max() <= 1 + 1e-4 and covariance.diag().min() > 0.5


def test_alternating_flips_invert_every_epoch_from_a_random_half():
    images, labels = synthetic_images(64, seed=1)
    split = Split(torch.from_numpy(images), torch.from_numpy(labels))
    loader = BatchLoader(split, 16, torch.device("cpu"), Normalizer(CIFAR10_MEAN, CIFAR10_STD, torch.device("cpu")),
                         False, train=True, seed=3, augmentation=Augmentation(flip="alternating"))
    per_image = []
    for epoch in range(3):
        plan = loader.plan(epoch)
        flips = torch.empty(64, dtype=torch.bool)
        flips[plan.order] = plan.flips
        per_image.append(flips)
    assert 16 < int(per_image[0].sum()) < 48
    assert torch.equal(per_image[1], ~per_image[0]) and torch.equal(per_image[2], per_image[0])
    random_flips = BatchLoader(split, 16, torch.device("cpu"), loader.normalizer, False, train=True, seed=3)
    assert torch.equal(random_flips.plan(1).order, loader.plan(1).order)  # order and crops unchanged


def test_the_schedule_rises_to_its_peak_and_ends_at_its_end_fraction():
    config = TrainConfig(lr=1.5, scheduler="triangular", triangular_start=0.2, triangular_peak=0.23,
                         triangular_end=0.07, iterations=100)
    schedule = LRSchedule(config, steps_per_epoch=48)
    assert schedule.lr(0, 0) == pytest.approx(0.3)
    assert schedule.lr(0, 23) == pytest.approx(1.5)
    assert schedule.lr(2, 100 - 96) == pytest.approx(1.5 * 0.07)
    assert schedule.lr(1, 61 - 48) == pytest.approx(1.5 * (1 - 0.93 * (61 - 23) / 77))


def test_bn_biases_take_the_scaled_lr_and_the_whitening_bias_freezes():
    config = apply_recipe(TrainConfig(model="airbench94", recipe="airbench94"), set())
    model = modeltype("airbench94")
    optimizer, rules = build_optimizer(model, config)
    groups = {group["kind"]: group for group in optimizer.param_groups}
    assert len(groups["norm_bias"]["params"]) == 6 and groups["whiten_bias"]["params"] == [model.whiten.bias]
    assert groups["norm_bias"]["lr_scale"] == 64 and groups["norm_bias"]["weight_decay"] == pytest.approx(
        config.weight_decay / 64)
    schedule = LRSchedule(config, 10, rules)
    at = {k: schedule.lr(2, 9) for k in groups}  # every group's schedule, at its last step before the freeze
    set_lrs(optimizer, schedule.group_lrs(2, 9))
    assert [groups[k]["lr"] for k in ("other", "norm_bias", "whiten_bias")] == [at["other"], 64 * at["other"],
                                                                                at["other"]]
    set_lrs(optimizer, schedule.group_lrs(3, 0))
    assert groups["whiten_bias"]["lr"] == 0.0 and groups["other"]["lr"] == schedule.lr(3, 0)
    # The recipe's mean-loss values are airbench's per-1024 decoupled ones.
    assert config.lr == pytest.approx(1.5) and config.lr * config.weight_decay == pytest.approx(0.0153 / 7.6666667,
                                                                                                rel=1e-6)
    one_group, _ = build_optimizer(modeltype("resnet20"), TrainConfig())
    assert len(one_group.param_groups) == 1  # the layout of checkpoints written before the groups


def test_lookahead_moves_the_weights_toward_their_average():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    lookahead = Lookahead(model, total_steps=10)
    for step in range(1, 11):
        with torch.no_grad():
            model.weight.fill_(float(step))
        lookahead.after_step(model)
        if step == 5:  # average 0 moves by 1 - 0.95^5 (5/10)^3 toward 5, and the weights follow
            expected = 5 * (1 - 0.95**5 * 0.5**3)
            assert model.weight.item() == pytest.approx(expected)
    # Step 10 is a lookahead step and the last: the average moves toward 10, the weights take it.
    after_5 = 5 * (1 - 0.95**5 * 0.5**3)
    assert model.weight.item() == pytest.approx(after_5 + (10 - after_5) * (1 - 0.95**5))
    short = Lookahead(model, total_steps=7)
    for _ in range(7):
        with torch.no_grad():
            model.weight.fill_(99.0)
        short.after_step(model)
    assert model.weight.item() == pytest.approx(short.average["weight"].item()) != 99.0  # copied back at the end


def test_the_length_is_9_9_epochs_of_the_datas_steps():
    config = apply_recipe(TrainConfig(model="airbench94", recipe="airbench94"), set())
    resolved, line = apply_length(config, set(), steps_per_epoch=48)
    assert resolved.iterations == math.ceil(9.9 * 48) == 476 and line == "9.9 epochs: 476 steps of 48 an epoch"
    assert apply_length(config, {"epochs"}, 48)[0].iterations is None


def test_the_recipe_dry_run(capsys):
    code, out, err = run_cli(capsys, "--model", "airbench94", "--recipe", "airbench94", "--dry-run")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["length"] == "9.9 epochs: the steps decided when the data set's size is known"
    assert plan["config"]["flip"] == "alternating" and plan["config"]["lookahead"] is True


ARGS = ("--model", "airbench94", "--recipe", "airbench94", "--batch-size", "32", "--threads", "1")


@pytest.mark.slow
def test_a_resume_mid_run_is_bit_exact(batches_dir, tmp_path, capsys):
    straight = tmp_path / "straight"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, straight, *ARGS, "--epochs", "5"))
    assert code == 0, err
    stopped = tmp_path / "stopped"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, stopped, *ARGS, "--epochs", "5", "--max-steps", "17"))
    assert code == 0, err
    payload = load_checkpoint(stopped / "last.pt")
    assert payload["lookahead_state"]["steps"] == 17 and payload["global_step"] == 17
    code, _, err = run_cli(capsys, "--resume", stopped / "last.pt", "--quiet")
    assert code == 0, err
    final = load_checkpoint(stopped / "last.pt")
    assert same_state(training_state(final), training_state(load_checkpoint(straight / "last.pt")))
    assert same_state(final["lookahead_state"], load_checkpoint(straight / "last.pt")["lookahead_state"])


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["airbench94", "airbench94-muon"])
def test_eval_reports_the_runs_final_line(batches_dir, tmp_path, capsys, recipe):
    run_dir = tmp_path / "run"
    args = tiny_train_args(batches_dir, run_dir, *ARGS, "--recipe", recipe, "--epochs", "2")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    done = next(line for line in out.splitlines() if line.startswith("done:"))
    assert "tta flip-translate" in done
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt")
    assert code == 0, err
    accuracy = done.split("accuracy ")[1].split("%")[0]
    assert f"accuracy {accuracy}%" in out.splitlines()[0]


@pytest.fixture(scope="module")
def trained(module_batches, tmp_path_factory) -> Path:
    """One airbench94 run of one epoch, for the tests that only read it."""
    from resnet_cifar.cli.main import main

    run_dir = tmp_path_factory.mktemp("airbench") / "run"
    assert main([str(a) for a in tiny_train_args(module_batches, run_dir, *ARGS, "--epochs", "1")]) == 0
    return run_dir


@pytest.mark.slow
def test_export_to_onnx_matches_pytorch(trained, tmp_path, capsys):
    skip_unless_installed("onnx", "onnxscript", "onnxruntime")
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", trained / "last.pt", "--format", "onnx",
                             "--output", tmp_path / "airbench94.onnx")
    assert code == 0, err
    assert "64 test images match PyTorch's" in out  # checked in onnxruntime


@pytest.mark.slow
@pytest.mark.torchrun
def test_two_processes_train_the_route(batches_dir, tmp_path):
    """torchrun with 2 processes: the global batch split between them, the lookahead on each."""
    args = [*tiny_train_args(batches_dir, tmp_path / "run", *ARGS, "--epochs", "2", "--device", "cpu")]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             "main.py", *map(str, args)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = load_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["world_size"] == 2 and payload["lookahead_state"]["steps"] == payload["global_step"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cifar100", "folder"])
def test_other_data_sets_whiten_from_their_own_images(kind, tmp_path, capsys):
    """CIFAR-100, and a folder of 40x40 images in 3 classes: the head has their class count and the
    fixed whitening filters decorrelate the patches of their own normalised training images (filters
    left at their initialisation, or taken from other images, would not)."""
    from helpers import write_cifar100, write_image_folder

    from resnet_cifar import api
    from resnet_cifar.data.datasets import DataSpec, load_dataset
    from resnet_cifar.models.techniques import whitening_images

    if kind == "cifar100":
        data_dir, classes = write_cifar100(tmp_path / "data" / "cifar-100-python").parent, 100
    else:
        data_dir, classes = write_image_folder(tmp_path / "images", classes=("a", "b", "c"), size=40), 3
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(data_dir, run_dir, *ARGS, "--dataset", kind, "--max-steps", "2"))
    assert code == 0, err
    trained = api.load_checkpoint(run_dir / "last.pt")
    assert trained.model.fc.out_features == classes and trained.image_size == (32 if kind == "cifar100" else 40)
    images = load_dataset(DataSpec(kind=kind, data_dir=str(data_dir), download=False)).train.images
    x = trained.normalize(whitening_images(torch.as_tensor(images)))
    out = torch.nn.functional.conv2d(x, trained.model.whiten.weight[:12].detach()).permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = out.T @ out / len(out)
    assert torch.allclose(covariance, torch.diag(covariance.diag()), atol=1e-3)
    assert covariance.diag().max() <= 1 + 1e-3 and covariance.diag().min() > 0.5
