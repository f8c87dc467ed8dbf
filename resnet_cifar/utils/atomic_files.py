"""Atomic file writes: a reader sees the old file or the whole new one, never a part of it, even
when the process is killed or the machine loses power mid-write.

Every file the program writes (checkpoints, the image cache, exports, config.json, metrics.csv,
timings.json, reports, plots, CSV outputs) goes through `atomic_path`, which also turns a failed
write into one line naming the file (WriteError). Where a command may write is decided before it
writes, by runfiles/destinations.py.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from resnet_cifar.errors import UserError

# Temporary files are named `.<name>.tmp-<random>` beside their destination, so that a writer killed
# mid-write leaves something a later run recognises and removes (checkpoints.remove_stale_temporaries).
TEMP_MARKER = ".tmp-"


class WriteError(UserError, OSError):
    """A file that could not be written (a full disk, no permission, its folder gone), as one line
    naming it. An OSError too, so that writers whose file only saves time can pass over it."""


def write_error(path: Path, error: OSError) -> WriteError:
    """The one line for a failed write of path; the file itself is untouched (atomic_path)."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENOENT and not path.parent.is_dir():
        reason = f"its folder {path.parent} does not exist (any more)"
    kept = "; its previous version is intact" if path.exists() else ""
    return WriteError(f"cannot write {path}: {reason}{kept}")


def file_mode(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual 0o666 less the umask
    (mkstemp would leave it readable by its owner only)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some file systems (and Windows) cannot open a directory; the rename still happened
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary file with a unique name in `path`'s folder, for the block to write.

    When the block succeeds the file is flushed to disk, renamed over `path` and the rename made
    durable; when it fails (or is interrupted) the temporary file is removed and `path` is untouched.
    A failure of the file system (a full disk, no permission, the folder gone) is a WriteError.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}{TEMP_MARKER}", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    os.close(fd)
    tmp = Path(name)
    mode = file_mode(path)
    try:
        yield tmp
        # After the block: a writer that replaces the file by name (torch.onnx, safetensors) makes a
        # new one with mkstemp's 0o600 or its own mode.
        os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except WriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
