"""`python -m resnet_cifar ...`: the command line, as `python main.py ...` and `resnet-cifar ...`."""
from resnet_cifar.cli.main import exit_now, main

if __name__ == "__main__":
    exit_now(main())
