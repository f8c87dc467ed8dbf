"""ResNets for 32x32 images: the ImageNet family (18-152) with a CIFAR stem, the paper's 6n+2
CIFAR nets (He et al. 2015, "Deep Residual Learning", section 4.2), their pre-activation
versions (He et al. 2016, "Identity Mappings in Deep Residual Networks"), the wide ones
(Zagoruyko & Komodakis 2016, "Wide Residual Networks") and the grouped ones (Xie et al. 2017,
"Aggregated Residual Transformations", ResNeXt-29)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualBlock", "Bottleneck", "ResNet", "PreActBlock", "PreActBottleneck", "PreActResNet"]


def init_convolutions_fan_out(model: nn.Module) -> None:
    """Every convolution from a normal of variance 2 / fan-out (fan-out = out_channels x k x k),
    the initialisation of the pre-activation, wide and ResNeXt authors' code."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A of He et al. 2015: subsample by 2 and zero-pad the new channels.

    It adds no parameters, which is what makes ResNet-20 exactly 0.27M parameters.
    """

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Option B: a strided 1x1 convolution and BatchNorm."""
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


def make_shortcut(kind: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if kind == "zeropad":
        return ZeroPadShortcut(out_planes - in_planes)
    return projection_shortcut(in_planes, out_planes, stride)


class ResidualBlock(nn.Module):
    """The basic block: two 3x3 convolutions and an identity (or shortcut) branch."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "projection", groups: int = 1,
                 base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block has no grouped form: groups=1 and base_width=64 only (use Bottleneck)")
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4): the block of ResNet-50/101/152, and with `groups` > 1
    ResNeXt's (Xie et al. 2017, form C): the 3x3 convolution split into `groups` paths of
    `base_width` * planes / 64 channels each (torchvision's and the authors' arithmetic)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "projection", groups: int = 1,
                 base_width: int = 64):
        super().__init__()
        width = int(planes * base_width / 64) * groups
        self.conv1 = conv1x1(in_planes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = make_shortcut(shortcut, in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + self.shortcut(x)
        return F.relu(out)


def make_stages(block, num_blocks: Sequence[int], widths: Sequence[int], in_planes: int,
                **block_options) -> tuple[nn.Sequential, int]:
    """The stages of a ResNet: num_blocks[i] blocks widths[i] wide; the first stage keeps the
    input's resolution, each later one halves it in its first block. Returns the stages and the
    width they end with (widths[-1] x the block's expansion)."""
    if len(num_blocks) != len(widths):
        raise ValueError("num_blocks and widths must have the same length")
    stages = []
    for index, (blocks, width) in enumerate(zip(num_blocks, widths, strict=True)):
        layers = []
        for stride in [1 if index == 0 else 2] + [1] * (blocks - 1):
            layers.append(block(in_planes, width, stride, **block_options))
            in_planes = width * block.expansion
        stages.append(nn.Sequential(*layers))
    return nn.Sequential(*stages), in_planes


class ResNet(nn.Module):
    """A ResNet with the CIFAR stem: 3x3 convolution, stride 1, no max-pool.

    `widths` sets the stage widths (64-128-256-512 for ResNet-18..152, 16-32-64 for the
    6n+2 nets, 64-128-256 for ResNeXt-29); the first stage keeps the resolution, each later one
    halves it. `groups` and `base_width` make the bottlenecks ResNeXt's (as in torchvision).
    """

    def __init__(
        self,
        block: type[ResidualBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        shortcut: str = "projection",
        groups: int = 1,
        base_width: int = 64,
    ):
        super().__init__()
        self.conv1 = conv3x3(3, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layers, out_planes = make_stages(block, num_blocks, widths, widths[0], shortcut=shortcut, groups=groups,
                                              base_width=base_width)
        self.fc = nn.Linear(out_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, w0, 32, 32)
        out = self.layers(out)  # (B, w_last * expansion, 32 / 2^(stages-1), ...)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, w_last * expansion)
        return self.fc(out)


def preact_projection(in_planes: int, out_planes: int, stride: int) -> nn.Conv2d | None:
    """A pre-activation block's shortcut: a 1x1 projection where the shape changes (it sees the
    pre-activated input), else None for the identity."""
    return conv1x1(in_planes, out_planes, stride) if stride != 1 or in_planes != out_planes else None


class PreActBlock(nn.Module):
    """The pre-activation basic block: BN-ReLU-conv twice, nothing after the addition, so the
    identity path runs clean from block to block (He et al. 2016). Where the shape changes, the
    1x1 projection sees the pre-activated input, as in the authors' and the WRN authors' code."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        # The WRN authors' dropout, between the two convolutions; it holds no weights, so a
        # checkpoint loads into the block built with or without it.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = preact_projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + identity


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck: BN-ReLU before each of 1x1 reduce, 3x3, 1x1 expand (x4)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv1x1(in_planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.shortcut = preact_projection(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + identity


class PreActResNet(nn.Module):
    """A pre-activation ResNet: a bare 3x3 stem convolution (its BN-ReLU is the first block's),
    the stages, then the final BN-ReLU that the last block leaves out, pooling and the classifier.

    The final BN-ReLU is the paper's; kuangliu/pytorch-cifar's PreActResNet18 omits it (1,024
    parameters fewer) and so pools a sum that was never normalised.
    """

    def __init__(
        self,
        block: type[PreActBlock] | type[PreActBottleneck],
        num_blocks: Sequence[int],
        widths: Sequence[int],
        num_classes: int = 10,
        stem_width: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if dropout and block is not PreActBlock:
            raise ValueError("dropout is placed between a basic block's two convolutions: use PreActBlock")
        stem_width = widths[0] if stem_width is None else stem_width
        self.conv1 = conv3x3(3, stem_width)
        self.layers, out_planes = make_stages(block, num_blocks, widths, stem_width,
                                              **({"dropout": dropout} if dropout else {}))
        self.bn = nn.BatchNorm2d(out_planes)
        self.fc = nn.Linear(out_planes, num_classes)
        init_convolutions_fan_out(self)  # as He et al. 2016 and the WRN authors do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
