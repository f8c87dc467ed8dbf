"""Train and evaluate ResNets on CIFAR-10, CIFAR-100 and folders of small images from the command line.

    python main.py --model resnet18 --mode train
    python main.py --mode eval --checkpoint runs/<run>/last.pt

`python main.py --help` lists every option; the installed command `resnet-cifar` is the same program.
"""
from resnet_cifar.cli.main import exit_now, main

if __name__ == "__main__":
    exit_now(main())
