"""ResNet-9: the network of the DAWNBench CIFAR-10 record and the fast-training work since
(David Page, "How to train your ResNet", 2018; davidcpage/cifar10-fast).

Every convolution is 3x3 without bias, then BatchNorm, then ReLU. Prep 64 channels; layer 1: 128
channels, max-pool 2, and a residual branch of two such convolutions; layer 2: 256, max-pool 2;
layer 3: 512, max-pool 2, and a residual branch of two; a global max-pool, a linear layer without
bias, and the logits scaled by 0.125. 6,573,120 parameters for 10 classes.
"""
from __future__ import annotations

import torch
from torch import nn

LOGIT_SCALE = 0.125  # Page's final Mul(0.125): keeps the initial logits small


def conv_bn(in_planes: int, planes: int) -> nn.Sequential:
    """3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=False),
                         nn.BatchNorm2d(planes), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + two conv_bn of x, at constant width."""

    def __init__(self, planes: int):
        super().__init__()
        self.branch = nn.Sequential(conv_bn(planes, planes), conv_bn(planes, planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class ResNet9(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.prep = conv_bn(3, 64)
        self.layer1 = nn.Sequential(conv_bn(64, 128), nn.MaxPool2d(2), Residual(128))  # (B, 128, 16, 16)
        self.layer2 = nn.Sequential(conv_bn(128, 256), nn.MaxPool2d(2))  # (B, 256, 8, 8)
        self.layer3 = nn.Sequential(conv_bn(256, 512), nn.MaxPool2d(2), Residual(512))  # (B, 512, 4, 4)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(512, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.prep(x)
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.pool(out).flatten(1)  # (B, 512)
        return self.linear(out) * LOGIT_SCALE
