"""The models by name: `modeltype("resnet18")` builds one for 32x32 images.

The networks live in the `resnet_cifar.models` package; this module is their face in a checkout,
with the names users of this project know.
"""
from resnet_cifar.models.registry import MODEL_NAMES, modeltype
from resnet_cifar.models.resnet import Bottleneck, PreActResNet, ResidualBlock, ResNet

__all__ = ["ResidualBlock", "Bottleneck", "ResNet", "PreActResNet", "MODEL_NAMES", "modeltype"]
