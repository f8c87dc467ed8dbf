"""airbench94's architectural techniques as choices for any model (Jordan 2024, arXiv 2404.00498):

- a patch-whitening first layer: a 2x2 convolution whose 24 filters are fixed from the training
  images (the 12 eigenvectors of their 2x2 patches' covariance, each scaled by 1/sqrt(eigenvalue +
  5e-4), and their negations), with a learned bias, then GELU; the model's own first convolution
  then takes those 24 channels instead of the image's 3;
- Dirac initialisation: each 3x3 convolution's first in_channels filters start as the identity;
- BatchNorm scales fixed at 1 (only the biases learn).

airbench94 has all three; `--no-whitening`, `--no-dirac` and `--bn-scale learned` take them away
from it (its first layer is then an ordinary learned 2x2 convolution).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

WHITENING_EPS = 5e-4  # added to each eigenvalue before the inverse square root
BN_SCALES = ("learned", "fixed")
MODEL_OPTIONS = ("whitening", "dirac", "bn_scale", "activation")  # TrainConfig fields that change how a model is built


class PatchWhitening(nn.Conv2d):
    """A 2x2 convolution from the image's channels to 8x as many, its weights set from the data by
    `init_from` and fixed (unless `make_learned` was called); its bias learns."""

    def __init__(self, in_channels: int = 3, kernel_size: int = 2):
        super().__init__(in_channels, 2 * in_channels * kernel_size ** 2, kernel_size, padding=0, bias=True)
        self.weight.requires_grad_(False)
        with torch.no_grad():
            self.bias.zero_()

    @property
    def fixed(self) -> bool:
        return not self.weight.requires_grad

    def make_learned(self) -> None:
        """An ordinary learned convolution (PyTorch's default initialisation): the technique removed."""
        self.reset_parameters()
        self.weight.requires_grad_(True)

    @torch.no_grad()
    def init_from(self, images: torch.Tensor, eps: float = WHITENING_EPS) -> None:
        """Set the filters from normalised images (N, C, H, W): the eigenvectors of their patches'
        covariance, each scaled by 1 / sqrt(eigenvalue + eps), largest first, and their negations."""
        channels, height, width = self.weight.shape[1:]
        patches = images.float().unfold(2, height, 1).unfold(3, width, 1)  # (N, C, H', W', h, w)
        patches = patches.transpose(1, 3).reshape(-1, channels * height * width)  # one row a patch
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
        filters = eigenvectors.T.reshape(-1, channels, height, width).flip(0)
        scaled = filters / torch.sqrt(eigenvalues + eps)
        self.weight.copy_(torch.cat((scaled, -scaled)).to(self.weight.dtype))


class WhitenedStem(nn.Module):
    """`net` behind a PatchWhitening layer and GELU; net's first convolution from the image's
    channels is replaced by one (PyTorch's default initialisation) from the whitened channels."""

    def __init__(self, net: nn.Module, in_channels: int = 3):
        super().__init__()
        self.whiten = PatchWhitening(in_channels)
        self.activation = nn.GELU()
        _replace_first_conv(net, in_channels, self.whiten.out_channels)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.activation(self.whiten(x)))  # the whitening makes the images 1 pixel smaller


def _replace_first_conv(net: nn.Module, old_channels: int, new_channels: int) -> None:
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == old_channels:
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, nn.Conv2d(new_channels, module.out_channels, module.kernel_size, module.stride,
                                             module.padding, module.dilation, module.groups,
                                             module.bias is not None))
            return
    raise ValueError(f"{type(net).__name__} has no convolution from {old_channels} channels to replace")


def whitening_images(images: torch.Tensor, count: int = 5000) -> torch.Tensor:
    """The training images the whitening is computed from: the first `count` (airbench: 5,000; the
    record script: 960)."""
    return images[:count]


def fixed_whitening_layers(model: nn.Module) -> list[PatchWhitening]:
    """model's PatchWhitening layers whose filters come from the data (none: nothing to initialise)."""
    return [m for m in model.modules() if isinstance(m, PatchWhitening) and m.fixed]


def init_whitening(model: nn.Module, images: torch.Tensor) -> None:
    """Set every fixed PatchWhitening layer of model from normalised training images."""
    for layer in fixed_whitening_layers(model):
        layer.init_from(images)


def dirac_init(model: nn.Module) -> None:
    """Each 3x3 convolution's first in_channels filters become the identity (the rest keep their
    initialisation), so that at the start each layer passes its input through."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3) and module.groups == 1:
                nn.init.dirac_(module.weight[:module.in_channels])


def default_conv_init(model: nn.Module) -> None:
    """Each 3x3 convolution back to PyTorch's default initialisation (Dirac initialisation removed)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
            module.reset_parameters()


def set_bn_scale(model: nn.Module, kind: str) -> None:
    """BatchNorm scales learned, or fixed at their initial value of 1."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            module.weight.requires_grad_(kind == "learned")


def set_bn_momentum(model: nn.Module, momentum: float) -> None:
    """Every BatchNorm's running-average momentum, in PyTorch's convention (the weight of the new
    batch's statistics: airbench's published 0.6 is 0.4 here, the record script's 0.5566 is 0.4434)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def model_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The MODEL_OPTIONS of a config (a dict: config.json's or a checkpoint's); None where a run
    made before them does not say (the model's own)."""
    return {name: values.get(name) for name in MODEL_OPTIONS}
