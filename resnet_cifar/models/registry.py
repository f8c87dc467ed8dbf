"""Every model by name: `modeltype(name)` builds one, `MODEL_NAMES` lists them, each with the
initialisation its authors' code uses."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from resnet_cifar.models.airbench import SHAPES, AirbenchNet
from resnet_cifar.models.resnet import (
    Bottleneck,
    PreActBlock,
    PreActBottleneck,
    PreActResNet,
    ResidualBlock,
    ResNet,
    init_convolutions_fan_out,
)
from resnet_cifar.models.resnet9 import ResNet9
from resnet_cifar.models.techniques import (
    BN_SCALES,
    PatchWhitening,
    WhitenedStem,
    default_conv_init,
    dirac_init,
    set_bn_scale,
)

__all__ = ["AIRBENCH_MODELS", "MODEL_NAMES", "WIDE_MODELS", "RESNEXT_MODELS", "DROPOUT_MODELS", "modeltype"]


def _init_cifar_paper(model: nn.Module) -> nn.Module:
    # He et al. 2015 train the 6n+2 nets from He (Kaiming) normal initialisation.
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
    return model


def _imagenet_family(block, num_blocks) -> Callable[[int], ResNet]:
    return lambda num_classes: ResNet(block, num_blocks, (64, 128, 256, 512), num_classes)


def _cifar_paper(depth: int) -> Callable[[int], ResNet]:
    n = (depth - 2) // 6
    return lambda num_classes: _init_cifar_paper(
        ResNet(ResidualBlock, (n, n, n), (16, 32, 64), num_classes, shortcut="zeropad")
    )


def _airbench(name: str) -> Callable[..., AirbenchNet]:
    return lambda num_classes, activation="gelu": AirbenchNet(num_classes, SHAPES[name], activation)


def _resnext29(cardinality: int, base_width: int) -> Callable[[int], ResNet]:
    # Xie et al. 2017's CIFAR nets: 3 stages of 3 grouped bottlenecks, outputs 256-512-1024, a
    # 64-wide 3x3 stem, projection shortcuts. The authors' code (facebookresearch/ResNeXt)
    # initialises the convolutions by fan-out and zeroes the classifier's bias.
    def build(num_classes: int) -> ResNet:
        model = ResNet(Bottleneck, (3, 3, 3), (64, 128, 256), num_classes, groups=cardinality, base_width=base_width)
        init_convolutions_fan_out(model)
        nn.init.zeros_(model.fc.bias)
        return model

    return build


def _preact_imagenet_family(num_blocks) -> Callable[..., PreActResNet]:
    return lambda num_classes, dropout=0.0: PreActResNet(PreActBlock, num_blocks, (64, 128, 256, 512), num_classes,
                                                        dropout=dropout)


def _preact_cifar_paper(depth: int) -> Callable[[int], PreActResNet]:
    # He et al. 2016's CIFAR nets: 9n+2 layers of bottlenecks, outputs 64-128-256, stem 16 wide.
    n = (depth - 2) // 9
    return lambda num_classes: PreActResNet(PreActBottleneck, (n, n, n), (16, 32, 64), num_classes, stem_width=16)


def _wide(depth: int, widen: int) -> Callable[..., PreActResNet]:
    # WRN-depth-widen: 6n+4 layers of pre-activation basic blocks 16k-32k-64k wide, stem 16 wide.
    n = (depth - 4) // 6
    widths = (16 * widen, 32 * widen, 64 * widen)
    return lambda num_classes, dropout=0.0: PreActResNet(PreActBlock, (n, n, n), widths, num_classes, stem_width=16,
                                                        dropout=dropout)


_WIDE_SHAPES = ((16, 8), (28, 2), (28, 10), (40, 2), (40, 4))  # (depth, widening factor)
_RESNEXT_SHAPES = ((32, 4), (8, 64), (16, 64))  # (cardinality, channels a path in the first stage)
WIDE_MODELS = tuple(f"wrn-{depth}-{widen}" for depth, widen in _WIDE_SHAPES)
RESNEXT_MODELS = tuple(f"resnext29-{cardinality}x{width}d" for cardinality, width in _RESNEXT_SHAPES)
# The nets of pre-activation basic blocks, where --dropout has its place.
DROPOUT_MODELS = ("preact-resnet18", "preact-resnet34", *WIDE_MODELS)
AIRBENCH_MODELS = tuple(SHAPES)  # the nets where --activation has its place

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet9": ResNet9,
    **{name: _airbench(name) for name in AIRBENCH_MODELS},
    "resnet18": _imagenet_family(ResidualBlock, (2, 2, 2, 2)),
    "resnet34": _imagenet_family(ResidualBlock, (3, 4, 6, 3)),
    "resnet50": _imagenet_family(Bottleneck, (3, 4, 6, 3)),
    "resnet101": _imagenet_family(Bottleneck, (3, 4, 23, 3)),
    "resnet152": _imagenet_family(Bottleneck, (3, 8, 36, 3)),
    **{f"resnet{depth}": _cifar_paper(depth) for depth in (20, 32, 44, 56, 110, 1202)},
    "preact-resnet18": _preact_imagenet_family((2, 2, 2, 2)),
    "preact-resnet34": _preact_imagenet_family((3, 4, 6, 3)),
    "preact-resnet164": _preact_cifar_paper(164),
    "preact-resnet1001": _preact_cifar_paper(1001),
    **{name: _wide(*shape) for name, shape in zip(WIDE_MODELS, _WIDE_SHAPES, strict=True)},
    **{name: _resnext29(*shape) for name, shape in zip(RESNEXT_MODELS, _RESNEXT_SHAPES, strict=True)},
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
# The techniques.py choices each model has built in; every other model has none of them.
OWN_TECHNIQUES = {name: dict(whitening=True, dirac=True, bn_scale="fixed") for name in AIRBENCH_MODELS}
NO_TECHNIQUES = dict(whitening=False, dirac=False, bn_scale="learned")


def modeltype(name: str, num_classes: int = 10, dropout: float = 0.0, *, whitening: bool | None = None,
              dirac: bool | None = None, bn_scale: str | None = None, activation: str | None = None) -> nn.Module:
    """Build the named ResNet; raises ValueError naming the valid models (and, for dropout, the
    models that take it). whitening, dirac and bn_scale (techniques.py) add airbench94's
    techniques to a model or take them from it; None keeps the model's own. activation: the airbench
    nets' (gelu, their own, or silu)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if bn_scale is not None and bn_scale not in BN_SCALES:
        raise ValueError(f"unknown bn_scale {bn_scale!r}; choose one of: {', '.join(BN_SCALES)}")
    if activation is not None:
        if name not in AIRBENCH_MODELS:
            raise ValueError(f"activation is for the airbench nets ({', '.join(AIRBENCH_MODELS)}), not {name}")
        model = _BUILDERS[name](num_classes, activation=activation)
    elif not dropout:
        model = _BUILDERS[name](num_classes)
    elif name not in DROPOUT_MODELS:
        raise ValueError(f"dropout is for the nets of pre-activation basic blocks ({', '.join(DROPOUT_MODELS)}), "
                         f"not {name}")
    else:
        model = _BUILDERS[name](num_classes, dropout=dropout)
    return _with_techniques(model, OWN_TECHNIQUES.get(name, NO_TECHNIQUES), whitening, dirac, bn_scale)


def _with_techniques(model: nn.Module, own: dict, whitening: bool | None, dirac: bool | None,
                     bn_scale: str | None) -> nn.Module:
    if whitening is not None and whitening != own["whitening"]:
        if whitening:
            model = WhitenedStem(model)
        else:
            for layer in model.modules():
                if isinstance(layer, PatchWhitening):
                    layer.make_learned()
    if dirac is not None and dirac != own["dirac"]:
        (dirac_init if dirac else default_conv_init)(model)
    if bn_scale is not None and bn_scale != own["bn_scale"]:
        set_bn_scale(model, bn_scale)
    return model
