"""airbench94's techniques for every model (--whitening, --dirac, --bn-scale): the nets they build,
their exact sizes, and a run, its evaluation, export and resume with them."""
import json

import pytest
import torch
from helpers import run_cli, skip_unless_installed, synthetic_images, tiny_train_args

from resnet_cifar.config import TrainConfig
from resnet_cifar.models.registry import modeltype
from resnet_cifar.models.techniques import PatchWhitening, WhitenedStem, fixed_whitening_layers, init_whitening
from resnet_cifar.optim.schedules import build_optimizer
from resnet_cifar.runfiles.checkpoints import load_checkpoint


def counts(model):
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


@pytest.mark.parametrize("name, options, expected", [
    ("resnet20", {}, (269_722, 269_722)),
    # + the whitening layer (3 x 24 x 2 x 2 fixed + 24 biases); the stem takes 24 channels: 16 x 24 x 9 for 16 x 3 x 9
    ("resnet20", {"whitening": True}, (269_722 + 312 + 16 * 9 * 21, 269_722 + 24 + 16 * 9 * 21)),
    ("resnet20", {"bn_scale": "fixed"}, (269_722, 269_722 - 688)),  # 688 BatchNorm scales
    ("resnet9", {"whitening": True}, (6_573_120 + 312 + 64 * 9 * 21, 6_573_120 + 24 + 64 * 9 * 21)),
    ("resnet9", {"bn_scale": "fixed"}, (6_573_120, 6_573_120 - 2_240)),
    ("airbench94", {}, (1_972_792, 1_971_352)),
    ("airbench94", {"whitening": False}, (1_972_792, 1_971_352 + 288)),  # its first layer learned
    ("airbench94", {"bn_scale": "learned"}, (1_972_792, 1_971_352 + 1_152)),
    ("airbench94", {"whitening": True, "dirac": True, "bn_scale": "fixed"}, (1_972_792, 1_971_352)),  # its own
])
def test_parameter_counts(name, options, expected):
    assert counts(modeltype(name, **options)) == expected


def is_dirac(conv):
    first = conv.weight[:conv.in_channels]
    return torch.equal(first, torch.nn.init.dirac_(torch.empty_like(first)))


def test_dirac_starts_each_3x3_convolution_as_the_identity():
    model = modeltype("resnet20", dirac=True)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 19 and all(is_dirac(c) for c in convs)
    assert not any(is_dirac(c) for c in modeltype("resnet20").modules() if isinstance(c, torch.nn.Conv2d))
    block = model.layers[0][0]  # 16 -> 16, stride 1: the identity on its input
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(block.conv1(x), x, atol=1e-6)
    own = modeltype("airbench94")
    plain = modeltype("airbench94", dirac=False)
    assert is_dirac(own.groups[0].conv1) and not is_dirac(plain.groups[0].conv1)


def test_the_whitening_stem_and_its_removal():
    images, _ = synthetic_images(100, seed=0)
    x = (torch.from_numpy(images).float() / 255 - 0.5) / 0.25
    model = modeltype("resnet20", whitening=True)
    assert isinstance(model, WhitenedStem) and model.net.conv1.in_channels == 24
    assert model(x[:2]).shape == (2, 10) and model(torch.randn(2, 3, 40, 40)).shape == (2, 10)
    init_whitening(model, x)
    airbench = modeltype("airbench94")
    airbench.init_whitening(x)
    assert torch.equal(model.whiten.weight, airbench.whiten.weight)  # the same layer, from the same images
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    learned = modeltype("airbench94", whitening=False)
    assert isinstance(learned.whiten, PatchWhitening) and learned.whiten.weight.requires_grad
    assert fixed_whitening_layers(learned) == [] and fixed_whitening_layers(airbench) == [airbench.whiten]


def test_fixed_bn_scales_are_left_out_of_the_optimizer():
    model = modeltype("resnet20", bn_scale="fixed")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and torch.equal(m.weight, torch.ones_like(m.weight))
                         for m in norms)
    optimized = {id(p) for group in build_optimizer(model, TrainConfig())[0].param_groups for p in group["params"]}
    assert not any(id(m.weight) in optimized for m in norms) and all(id(m.bias) in optimized for m in norms)


def test_a_whitened_models_bias_is_frozen_apart():
    model = modeltype("resnet20", whitening=True)
    groups = {g["kind"]: g for g in build_optimizer(model, TrainConfig(whiten_bias_epochs=2))[0].param_groups}
    assert groups["whiten_bias"]["params"] == [model.whiten.bias]


def test_bad_choices_are_one_line(capsys):
    code, _, err = run_cli(capsys, "--bn-scale", "frozen", "--dry-run")
    assert code == 2 and "invalid choice: 'frozen'" in err and "'learned', 'fixed'" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "--model", "resnet9", "--whitening", "--no-dirac", "--dry-run")
    config = json.loads(out)["config"]
    assert code == 0 and (config["whitening"], config["dirac"], config["bn_scale"]) == (True, False, None)


TECHNIQUES = ("--whitening", "--dirac", "--bn-scale", "fixed", "--whiten-bias-epochs", "1")


@pytest.mark.slow
def test_a_run_with_them_evaluates_exports_and_resumes(batches_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, *TECHNIQUES))
    assert code == 0, err
    payload = load_checkpoint(run_dir / "last.pt")
    state = payload["model_state"]
    assert state["whiten.weight"].abs().sum() > 0 and "net.conv1.weight" in state  # set from the images
    assert torch.equal(state["net.bn1.weight"], torch.ones(16))  # fixed scales stayed 1
    done = next(line for line in out.splitlines() if line.startswith("done:"))
    code, out, err = run_cli(capsys, "--mode", "eval", "--checkpoint", run_dir / "last.pt")
    assert code == 0, err
    assert f"accuracy {done.split('accuracy ')[1].split('%')[0]}%" in out.splitlines()[0]
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", run_dir / "last.pt", "--format",
                             "torchscript", "--output", tmp_path / "model.pt")
    assert code == 0 and "match PyTorch's" in out, err
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "3", "--no-whitening")
    assert code == 2 and "--whitening" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "--resume", run_dir / "last.pt", "--epochs", "3", "--quiet")
    assert code == 0, err
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3


@pytest.mark.slow
def test_safetensors_export_rebuilds_the_whitened_model(batches_dir, tmp_path, capsys):
    skip_unless_installed("safetensors")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *tiny_train_args(batches_dir, run_dir, "--whitening", "--epochs", "1"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "--mode", "export", "--checkpoint", run_dir / "last.pt", "--format",
                             "safetensors", "--output", tmp_path / "model.safetensors")
    assert code == 0 and "match PyTorch's" in out, err
    sidecar = json.loads((tmp_path / "model.json").read_text())
    assert sidecar["model_options"] == {"whitening": True, "dirac": None, "bn_scale": None, "activation": None}
