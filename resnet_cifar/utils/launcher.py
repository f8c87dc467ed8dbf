"""How this process was started, so that messages show the command to type again."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path


def _script(argv0: str | None) -> str:
    """main.py as it was started (`project/main.py` from another folder), quoted for a shell;
    `main.py` when the program was not started from it (main() called from Python)."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    return shlex.quote(str(path)) if path.name == "main.py" and path.is_file() else "main.py"


def program(argv0: str | None = None) -> str:
    """The command that started this program: `resnet-cifar` (the installed command), `python -m
    resnet_cifar`, or else `python main.py` with main.py's path as it was typed (a checkout)."""
    path = Path(sys.argv[0] if argv0 is None else argv0)
    if path.name == "resnet-cifar":
        return "resnet-cifar"
    if path.name == "__main__.py" and path.parent.name == "resnet_cifar":
        return "python -m resnet_cifar"
    return f"python {_script(argv0)}"


def torchrun_target(argv0: str | None = None) -> str:
    """What follows torchrun's own options for this program: main.py's path or `-m resnet_cifar`."""
    started = program(argv0)
    if started in ("resnet-cifar", "python -m resnet_cifar"):
        return "-m resnet_cifar"
    return started.removeprefix("python ")
