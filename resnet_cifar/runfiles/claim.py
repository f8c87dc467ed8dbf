"""A run folder's claim: one process at a time writes in a run folder.

The claim is an advisory lock (fcntl.flock) on `.lock` inside the folder, which names the holder's
process and host. The kernel drops the lock when its process ends, however it ends, so a claim
left by a killed process is taken over at once (with a note naming it); a second process while the
first lives is refused in one line. Under torchrun the claim is rank 0's.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path

from resnet_cifar.errors import UserError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks in the standard library; folders are not claimed there
    fcntl = None


class Claim:
    """A held claim on a run folder; release() (or the end of a `with`) gives it back."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = Path(folder)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            (self.folder / LOCK_NAME).unlink()  # while still locked: nobody holds a name we remove
        os.close(self._fd)  # drops the lock
        self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace")
        holder = json.loads(text) if text.strip() else {}
        return holder if isinstance(holder, dict) else {}
    return {}


def _describe(holder: dict) -> str:
    return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}"


def claim(folder: Path, flag: str = "--run-dir", say=print) -> Claim:
    """Claim the existing folder for this process, or raise UserError naming the process that holds it."""
    folder = Path(folder)
    if fcntl is None:
        return Claim(folder, None)
    path = folder / LOCK_NAME
    for _ in range(10):  # a holder may remove the name between our open and our lock: try again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{flag} {folder}: cannot claim it ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{flag} {folder} is in use by another run ({_describe(holder)}); wait for it to "
                            f"end or choose another {flag}") from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except OSError:
            same_file = False
        if not same_file:  # the name was removed (and maybe taken anew) before we locked: our lock is on nothing
            os.close(fd)
            continue
        left = _holder(fd)
        if left:
            say(f"note: {flag} {folder} was claimed by {_describe(left)}, which has ended; taking it over",
                file=sys.stderr)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        return Claim(folder, fd)
    raise UserError(f"{flag} {folder}: cannot claim it (other processes keep taking and giving it back)")
