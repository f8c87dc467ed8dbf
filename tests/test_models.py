import pytest
import torch

from resnet_cifar.models.registry import DROPOUT_MODELS, MODEL_NAMES, modeltype
from resnet_cifar.models.resnet import (
    Bottleneck,
    PreActBlock,
    PreActBottleneck,
    ResidualBlock,
    ResNet,
)

# The pre-activation and wide nets' counts are the published ones: ResNetV2-18 11,172,170,
# pre-activation ResNet-164 1,703,258 and -1001 10,327,706, WRN-28-2 1,467,610, WRN-28-10
# 36,479,194, WRN-40-2 2,243,546 (osmr/imgclsmob's CIFAR-10 tables; the WRN paper: 11.0M for
# WRN-16-8, 8.9M for WRN-40-4); so are ResNeXt-29's: 32x4d 4,775,754 and 16x64d 68,155,210
# (osmr/imgclsmob), 8x64d 34.4M (Xie et al. 2017, Table 7).
PARAMS = {
    "resnet9": 6_573_120,  # Page's DAWNBench net (davidcpage/cifar10-fast)
    "airbench94": 1_972_792,  # Jordan's airbench94 net, its 1,152 fixed BatchNorm scales included
    "airbench95": 4_606_520,  # legacy/airbench95.py's net, counted the same way
    "airbench96": 9_918_776,  # legacy/airbench96.py's
    "resnet18": 11_173_962, "resnet34": 21_282_122, "resnet50": 23_520_842,
    "resnet101": 42_512_970, "resnet152": 58_156_618, "resnet20": 269_722, "resnet32": 464_154,
    "resnet44": 658_586, "resnet56": 853_018, "resnet110": 1_727_962, "resnet1202": 19_421_274,
    "preact-resnet18": 11_172_170, "preact-resnet34": 21_280_330, "preact-resnet164": 1_703_258,
    "preact-resnet1001": 10_327_706, "wrn-16-8": 10_961_370, "wrn-28-2": 1_467_610, "wrn-28-10": 36_479_194,
    "wrn-40-2": 2_243_546, "wrn-40-4": 8_949_210,
    "resnext29-32x4d": 4_775_754, "resnext29-8x64d": 34_426_698, "resnext29-16x64d": 68_155_210,
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


def zero_convolutions(block: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()


@pytest.mark.parametrize("block", [PreActBlock(8, 8), PreActBottleneck(32, 8)])
def test_a_pre_activation_block_passes_its_input_through_unchanged(block):
    # With the residual branch silenced, a pre-activation block is the identity: nothing follows
    # the addition (He et al. 2016). The original block's final ReLU clips the negative half.
    zero_convolutions(block)
    x = torch.randn(2, block.bn1.num_features, 8, 8)
    assert torch.equal(block(x), x)
    original = ResidualBlock(8, 8)
    zero_convolutions(original)
    x = torch.randn(2, 8, 8, 8)
    assert torch.equal(original(x), torch.relu(x)) and not torch.equal(torch.relu(x), x)


def test_a_pre_activation_projection_sees_the_activated_input():
    block = PreActBlock(8, 16, stride=2)
    x = torch.randn(2, 8, 8, 8)
    expected = block.shortcut(torch.relu(block.bn1(x)))
    zero_convolutions(block.conv1)
    zero_convolutions(block.conv2)
    assert torch.equal(block(x), expected)
    assert expected.shape == (2, 16, 4, 4)


def test_wide_resnet_28_10_has_the_papers_shape():
    model = modeltype("wrn-28-10")
    assert model.conv1.out_channels == 16
    assert [len(stage) for stage in model.layers] == [4, 4, 4]
    assert [stage[0].conv1.out_channels for stage in model.layers] == [160, 320, 640]
    assert [stage[0].conv1.stride for stage in model.layers] == [(1, 1), (2, 2), (2, 2)]
    assert model.layers[0][0].shortcut is not None and model.layers[0][1].shortcut is None  # 16 -> 160 wide
    assert model.fc.in_features == 640


def test_pre_activation_resnet164_is_three_stages_of_18_bottlenecks():
    model = modeltype("preact-resnet164")
    assert [len(stage) for stage in model.layers] == [18, 18, 18]
    assert all(isinstance(block, PreActBottleneck) for stage in model.layers for block in stage)
    assert model.fc.in_features == 256


def test_dropout_acts_in_training_only_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    with_dropout = modeltype("wrn-16-8", dropout=0.3)
    without = modeltype("wrn-16-8")
    assert with_dropout.state_dict().keys() == without.state_dict().keys()  # checkpoints load either way
    without.load_state_dict(with_dropout.state_dict())
    x = torch.randn(4, 3, 32, 32)
    with_dropout.eval(), without.eval()
    with torch.no_grad():
        assert torch.equal(with_dropout(x), without(x))
        with_dropout.train()
        torch.manual_seed(1)
        first = with_dropout.layers[0][0](with_dropout.conv1(x))
        torch.manual_seed(2)
        assert not torch.equal(first, with_dropout.layers[0][0](with_dropout.conv1(x)))


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "preact-resnet164"])
def test_dropout_is_refused_where_it_has_no_place(name):
    assert name not in DROPOUT_MODELS
    with pytest.raises(ValueError, match=f"dropout is for the nets of pre-activation basic blocks .*, not {name}"):
        modeltype(name, dropout=0.3)


@pytest.mark.parametrize("name, groups, widths", [
    ("resnext29-32x4d", 32, [128, 256, 512]),  # 32 paths of 4, 8, 16 channels
    ("resnext29-8x64d", 8, [512, 1024, 2048]),  # 8 paths of 64, 128, 256 channels
])
def test_resnext29_splits_each_3x3_convolution_into_its_cardinality(name, groups, widths):
    model = modeltype(name)
    assert model.conv1.out_channels == 64 and model.conv1.stride == (1, 1)
    assert [len(stage) for stage in model.layers] == [3, 3, 3]
    assert [stage[0].conv2.out_channels for stage in model.layers] == widths
    assert all(block.conv2.groups == groups for stage in model.layers for block in stage)
    assert [stage[0].conv3.out_channels for stage in model.layers] == [256, 512, 1024]
    assert [stage[0].conv2.stride for stage in model.layers] == [(1, 1), (2, 2), (2, 2)]
    assert model.fc.in_features == 1024 and not model.fc.bias.any()


@pytest.mark.parametrize("groups, base_width, stride", [(1, 64, 1), (32, 4, 2), (8, 64, 2)])
def test_bottleneck_equals_torchvisions(groups, base_width, stride):
    # The trusted reference: torchvision's Bottleneck (ResNet-50 at groups 1, ResNeXt-50 32x4d at
    # 32 x 4) given the same weights gives exactly the same output.
    from torchvision.models.resnet import Bottleneck as TorchvisionBottleneck

    torch.manual_seed(0)
    ours = Bottleneck(64, 32, stride, groups=groups, base_width=base_width).eval()
    downsample = torch.nn.Sequential(torch.nn.Conv2d(64, 128, 1, stride, bias=False), torch.nn.BatchNorm2d(128))
    theirs = TorchvisionBottleneck(64, 32, stride, downsample, groups=groups, base_width=base_width).eval()
    state = {k.replace("shortcut.", "downsample."): v for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_the_basic_block_has_no_grouped_form():
    with pytest.raises(ValueError, match="groups=1 and base_width=64 only"):
        ResidualBlock(8, 8, groups=2)


def test_resnet9_is_pages_net():
    """Convolutions 3x3 without bias, widths 64-128-256-512, three max-pools, a global max-pool,
    and logits 0.125 x a bias-free linear layer of the pooled features."""
    model = modeltype("resnet9").eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (3, 64), (64, 128), (128, 128), (128, 128), (128, 256), (256, 512), (512, 512), (512, 512)]
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 3
    assert model.linear.bias is None
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model.layer3(model.layer2(model.layer1(model.prep(x)))).amax(dim=(2, 3))
        assert torch.allclose(model(x), 0.125 * features @ model.linear.weight.T, atol=1e-6)
