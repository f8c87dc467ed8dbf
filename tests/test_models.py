import pytest
import torch

from models import MODEL_NAMES, Bottleneck, ResidualBlock, ResNet, modeltype

PARAMS = {
    "resnet18": 11_173_962, "resnet34": 21_282_122, "resnet50": 23_520_842,
    "resnet101": 42_512_970, "resnet152": 58_156_618, "resnet20": 269_722, "resnet32": 464_154,
    "resnet44": 658_586, "resnet56": 853_018, "resnet110": 1_727_962, "resnet1202": 19_421_274,
}


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_model_has_a_count():
    assert set(MODEL_NAMES) == set(PARAMS)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_and_output_shape(name):
    torch.manual_seed(0)
    model = modeltype(name)
    assert count(model) == PARAMS[name]
    # Train mode: BatchNorm uses batch statistics, as it does at the first step of training
    # (eval-mode running stats of an untrained ResNet-1202 overflow through 600 blocks).
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_num_classes_changes_only_the_classifier():
    assert count(modeltype("resnet20", num_classes=100)) == PARAMS["resnet20"] + 90 * 64 + 90
    assert modeltype("resnet18", num_classes=100)(torch.randn(1, 3, 32, 32)).shape == (1, 100)


@pytest.mark.parametrize("bad", ["resnet19", "ResNet18", "", "vgg16"])
def test_modeltype_rejects_unknown_names_listing_valid_ones(bad):
    with pytest.raises(ValueError, match="resnet18, resnet34") as info:
        modeltype(bad)
    assert repr(bad) in str(info.value)


def test_cifar_stem_keeps_resolution():
    model = modeltype("resnet18")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    features = model.layers[0](torch.relu(model.bn1(model.conv1(torch.randn(1, 3, 32, 32)))))
    assert features.shape == (1, 64, 32, 32)


def test_paper_nets_use_parameter_free_shortcuts():
    model = modeltype("resnet20")
    shortcut_params = sum(count(m.shortcut) for m in model.modules() if isinstance(m, ResidualBlock))
    assert shortcut_params == 0


def test_zero_pad_shortcut_matches_option_a():
    block = ResidualBlock(16, 32, stride=2, shortcut="zeropad")
    x = torch.randn(2, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_projection_shortcut_only_where_shape_changes():
    model = ResNet(Bottleneck, (1, 1), (8, 16), num_classes=3)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert all(not isinstance(b.shortcut, torch.nn.Identity) for b in blocks)  # 8 -> 32 channels, then stride 2
    assert isinstance(ResidualBlock(8, 8).shortcut, torch.nn.Identity)
