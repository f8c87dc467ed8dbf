"""The airbench nets (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv
2404.00498; KellerJordan/cifar10-airbench): a fixed 2x2 patch-whitening convolution, three groups
of 3x3 convolutions with max-pooling, GELU and BatchNorm whose scale is fixed at 1, a final 3x3
max-pool and a linear layer whose logits are scaled by 1/9.

- airbench94: groups of two convolutions, 64, 256 and 256 wide;
- airbench95: the same, 128, 384 and 384 wide (legacy/airbench95.py);
- airbench96: groups of three convolutions, 128, 384 and 512 wide, with a residual connection
  over the last two of each group, and PyTorch's BatchNorm momentum (legacy/airbench96.py).

Their first layer is not learned: `init_whitening(images)` sets it from the training images' 2x2
patch covariance before training (a resumed run loads it from its checkpoint). Its bias is
learned for the first epochs only (--whiten-bias-epochs). techniques.py makes the whitening,
Dirac initialisation and fixed BatchNorm scale choices for every model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from resnet_cifar.models.techniques import PatchWhitening

ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU}  # --activation: the groups' (the record's net takes SiLU)
LOGIT_SCALE = 1 / 9


@dataclass(frozen=True)
class Shape:
    widths: tuple[int, int, int]
    convs: int = 2  # convolutions a group; with 3, a residual connection over the last two
    bn_momentum: float = 0.4  # PyTorch's convention: the published running-average momentum of 0.6


SHAPES = {
    "airbench94": Shape((64, 256, 256)),
    "airbench95": Shape((128, 384, 384)),
    "airbench96": Shape((128, 384, 512), convs=3, bn_momentum=0.1),
}


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 (only the bias learns) and an eps of 1e-12, as published."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution without bias whose first in_channels filters start as the identity."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


class ConvGroup(nn.Module):
    """conv, max-pool, BatchNorm, activation, then one or two more (conv, BatchNorm, activation); with
    two more, the second's BatchNorm output adds the group's first activation before its activation."""

    def __init__(self, in_channels: int, out_channels: int, shape: Shape, activation: str = "gelu"):
        super().__init__()
        self.conv1 = dirac_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(out_channels, shape.bn_momentum)
        self.conv2 = dirac_conv(out_channels, out_channels)
        self.norm2 = FrozenScaleBatchNorm(out_channels, shape.bn_momentum)
        self.residual = shape.convs == 3
        if self.residual:
            self.conv3 = dirac_conv(out_channels, out_channels)
            self.norm3 = FrozenScaleBatchNorm(out_channels, shape.bn_momentum)
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        if not self.residual:
            return self.activation(self.norm2(self.conv2(x)))
        y = self.activation(self.norm2(self.conv2(x)))
        return self.activation(self.norm3(self.conv3(y)) + x)


class AirbenchNet(nn.Module):
    def __init__(self, num_classes: int = 10, shape: Shape = SHAPES["airbench94"], activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        widths = shape.widths
        self.whiten = PatchWhitening(3)  # 3 -> 24 channels
        self.activation = nn.GELU()  # after the whitening, GELU in every published net
        self.groups = nn.Sequential(ConvGroup(24, widths[0], shape, activation),
                                    ConvGroup(widths[0], widths[1], shape, activation),
                                    ConvGroup(widths[1], widths[2], shape, activation))
        self.pool = nn.AdaptiveMaxPool2d(1)  # the published 3x3 max-pool, for any input size
        self.fc = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.whiten(x))  # (B, 24, H-1, W-1)
        x = self.pool(self.groups(x)).flatten(1)  # (B, widths[2])
        return self.fc(x) * LOGIT_SCALE

    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 3, H, W)."""
        self.whiten.init_from(images)

