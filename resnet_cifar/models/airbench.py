"""airbench94's net (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv
2404.00498; KellerJordan/cifar10-airbench): a fixed 2x2 patch-whitening convolution, three groups
of two 3x3 convolutions (64, 256, 256 wide) with max-pooling, GELU and BatchNorm whose scale is
fixed at 1, a final 3x3 max-pool and a linear layer whose logits are scaled by 1/9.

Its first layer is not learned: `init_whitening(images)` sets it from the training images' 2x2
patch covariance before training (a resumed run loads it from its checkpoint). Its bias is
learned for the first epochs only (--whiten-bias-epochs). techniques.py makes its whitening,
Dirac initialisation and fixed BatchNorm scale choices for every model.
"""
from __future__ import annotations

import torch
from torch import nn

from resnet_cifar.models.techniques import PatchWhitening

WIDTHS = (64, 256, 256)
BN_MOMENTUM = 0.4  # PyTorch's convention: the published net's running-average momentum of 0.6
LOGIT_SCALE = 1 / 9


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 (only the bias learns) and an eps of 1e-12, as published."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-12, momentum=BN_MOMENTUM)
        self.weight.requires_grad_(False)


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A 3x3 convolution without bias whose first in_channels filters start as the identity."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


class ConvGroup(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = dirac_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(out_channels)
        self.conv2 = dirac_conv(out_channels, out_channels)
        self.norm2 = FrozenScaleBatchNorm(out_channels)
        self.activation = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.norm1(self.pool(self.conv1(x))))
        return self.activation(self.norm2(self.conv2(x)))


class Airbench94(nn.Module):
    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = WIDTHS):
        super().__init__()
        self.whiten = PatchWhitening(3)  # 3 -> 24 channels
        self.activation = nn.GELU()
        self.groups = nn.Sequential(ConvGroup(24, widths[0]), ConvGroup(widths[0], widths[1]),
                                    ConvGroup(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)  # the published 3x3 max-pool, for any input size
        self.fc = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.whiten(x))  # (B, 24, H-1, W-1)
        x = self.pool(self.groups(x)).flatten(1)  # (B, 256)
        return self.fc(x) * LOGIT_SCALE

    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 3, H, W)."""
        self.whiten.init_from(images)
