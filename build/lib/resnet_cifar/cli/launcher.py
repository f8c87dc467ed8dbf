"""How this process was started, so that messages show the command to type again."""
from __future__ import annotations

import sys
from pathlib import Path


def program(argv0: str | None = None) -> str:
    """The command that started this program: `resnet-cifar` (the installed command), `python -m
    resnet_cifar`, or else `python main.py` (a checkout, and main() called from Python)."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    if path.name == "resnet-cifar":
        return "resnet-cifar"
    if path.name == "__main__.py" and path.parent.name == "resnet_cifar":
        return "python -m resnet_cifar"
    return "python main.py"


def torchrun_target(argv0: str | None = None) -> str:
    """What follows torchrun's own options for this program: `main.py` or `-m resnet_cifar`."""
    return "main.py" if program(argv0) == "python main.py" else "-m resnet_cifar"
