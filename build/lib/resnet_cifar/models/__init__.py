"""The networks: ResNets with a CIFAR stem, the paper's 6n+2 nets, pre-activation and wide ResNets,
ResNeXt-29, ResNet-9; `modeltype(name)` builds one."""
