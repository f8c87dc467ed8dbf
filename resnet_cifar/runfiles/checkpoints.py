"""Checkpoint files: atomic writes, safe loads, and an integrity check.

A checkpoint is a plain dict that `torch.load(weights_only=True)` accepts: tensors, numbers,
strings, lists, tuples and dicts only, so loading one never runs code from the file.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import pickle
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from resnet_cifar.config import TrainConfig
from resnet_cifar.errors import UserError
from resnet_cifar.models.registry import MODEL_NAMES
from resnet_cifar.utils.atomic_files import TEMP_MARKER, atomic_path, write_error

FORMAT = "resnet-cifar-checkpoint"
FORMAT_VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _feed(digest: hashlib._Hash, value: Any) -> None:
    """Hash a checkpoint value in a canonical order: keys sorted, tensors by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def checksum(payload: dict) -> str:
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != "sha256"})
    return digest.hexdigest()


class _RecordingWriter:
    """A file wrapper that remembers the OSError of a failed write.

    torch.save's zip writer turns a failed write (ENOSPC, EFBIG) into a RuntimeError such as
    "unexpected pos 896 vs 790", losing the reason; this keeps it so we can name it.
    """

    def __init__(self, file):
        self.file = file
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write payload to path atomically (atomic_files.atomic_path).

    A crash or a full disk at any moment leaves either the old file or the new one, never a mix.
    """
    path = Path(path)
    payload = {**payload, "format": FORMAT, "format_version": FORMAT_VERSION}
    payload["sha256"] = checksum(payload)
    writer = None
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            writer = _RecordingWriter(f)
            torch.save(payload, writer)
    except RuntimeError:
        # torch.save's zip writer reports a failed write as a RuntimeError; the OSError beneath it
        # is the one to report, as any other file's (the previous checkpoint is intact).
        if writer is not None and writer.error is not None:
            raise write_error(path, writer.error) from None
        raise


def detached_copy(value: Any) -> Any:
    """A copy of a checkpoint payload that training can no longer change: every tensor copied to
    the CPU (a state_dict's tensors are the live parameters and buffers), containers rebuilt."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: detached_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(detached_copy(item) for item in value)
    return value  # numbers, strings, None: immutable


class CheckpointWriter:
    """Writes checkpoints with save_checkpoint, each on a background thread when `background`.

    Why: writing ResNet-18's 89.5 MB checkpoint (checksum, serialise, fsync) takes 0.2-0.6 s,
    and an epoch of it on an H200 ~1.1 s (bench/README.md). In the background the next epoch
    trains meanwhile; the thread writes a detached copy of the payload. One write at a time: a save
    first waits for the one in flight, so last.pt always holds a complete, older or newer epoch.
    wait() blocks until the write in flight is on disk and raises its error (a full disk is the
    same UserError as a synchronous write's); call it before anything reads the files and before
    saying that a checkpoint is saved.
    """

    def __init__(self, background: bool):
        self.background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, path: Path, payload: dict) -> None:
        self.wait()
        if not self.background:
            save_checkpoint(path, payload)
            return
        snapshot = detached_copy(payload)
        self._thread = threading.Thread(target=self._write, args=(path, snapshot), name="checkpoint-writer")
        self._thread.start()

    def _write(self, path: Path, payload: dict) -> None:
        try:
            save_checkpoint(path, payload)
        except BaseException as e:  # re-raised on the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # The write in flight finishes before the run ends either way; when the run is already
        # failing, its error is the one to report, not the write's.
        if exc_type is None:
            self.wait()
        else:
            with contextlib.suppress(BaseException):
                self.wait()


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temp files left by a writer that was killed mid-write; they are never loadable."""
    removed = []
    for candidate in Path(directory).glob(f".*{TEMP_MARKER}*"):
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def load_checkpoint(path: Path) -> dict:
    """Load and verify a run's checkpoint: read_checkpoint, then its structure (structure_problem)."""
    payload = read_checkpoint(path)
    problem = structure_problem(payload)
    if problem is not None:
        raise UserError(f"checkpoint {path} is damaged or foreign: {problem}")
    payload["model_state"] = strip_wrapper_prefixes(payload["model_state"])
    return payload


def read_checkpoint(path: Path) -> dict:
    """Load a file written by save_checkpoint and check it is whole (format marker, version and
    checksum); every failure is a UserError. load_checkpoint also checks it is a run's."""
    path = Path(path)
    if not path.exists():
        if (path.parent / "config.json").is_file() and not (path.parent / "best.pt").exists():
            raise UserError(f"checkpoint {path} does not exist: the run in {path.parent} stopped before its first "
                            f"checkpoint; start it again with the command that started it")
        raise UserError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise UserError(f"checkpoint {path} is a directory; give the path of a .pt file")
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty")
    try:
        # weights_only=True is explicit so that TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn it off.
        with warnings.catch_warnings():  # torch's own warnings (a legacy file) would add lines to the one
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # "Unsupported global" means the file names a Python class or function to call: a pickled
        # object, not data. Other unpickling errors are garbage bytes.
        if "unsupported global" in str(e).lower():
            raise UserError(
                f"refusing to load {path}: it holds Python objects that could run code "
                f"(a legacy full-pickle or foreign file); only tensors and plain data are loaded"
            ) from None
        raise UserError(f"checkpoint {path} is not a valid checkpoint (corrupted: not a tensor pickle)") from None
    except Exception as e:  # truncated zip, random bytes, wrong magic number
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"checkpoint {path} is not a valid checkpoint (truncated or corrupted: {first_line})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not a checkpoint of this program (no '{FORMAT}' format marker)")
    version = payload.get("format_version", 0)
    if not _is_int(version) or version < 1:
        raise UserError(f"checkpoint {path} has an unknown format version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {version}, newer than this program's "
            f"{FORMAT_VERSION}; update the program to load it"
        )
    if payload.get("sha256") != checksum(payload):
        raise UserError(f"checkpoint {path} failed its integrity check (SHA-256 mismatch): the file is corrupted")
    return payload


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_state(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in value.items())


def _is_numbers(value: Any, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def structure_problem(payload: dict) -> str | None:
    """What is wrong with a checksummed payload's structure (its fields and their types), or None.
    The checksum says the file is whole; this says it is one this program can use."""
    if payload.get("model_name") not in MODEL_NAMES:
        return f"model_name {payload.get('model_name')!r} is none of {', '.join(MODEL_NAMES)}"
    num_classes = payload.get("num_classes")
    if not _is_int(num_classes) or num_classes < 1:
        return f"num_classes {num_classes!r} is not a count"
    if not _is_state(payload.get("model_state")):
        return "model_state is not a dict of named tensors"
    if payload.get("ema_state") is not None and not _is_state(payload["ema_state"]):
        return "ema_state is not a dict of named tensors"
    for name in ("epoch", "step", "global_step"):
        if not _is_int(payload.get(name)) or payload[name] < 0:
            return f"{name} {payload.get(name)!r} is not a count"
    if not isinstance(payload.get("config"), dict):
        return f"config is {type(payload.get('config')).__name__}, not a dict of options"
    try:
        TrainConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as e:
        return f"config: {e}"
    classes = payload.get("classes")
    if (not isinstance(classes, (list, tuple)) or len(classes) != num_classes
            or not all(isinstance(c, str) for c in classes)):
        return f"classes is not a list of {num_classes} names"
    for name in ("mean", "std"):
        if not _is_numbers(payload.get(name), 3):
            return f"{name} is not 3 finite numbers"
    if not all(value > 0 for value in payload["std"]):
        return "std holds a value <= 0"
    size = payload.get("image_size")
    if size is not None and (not _is_int(size) or size < 1):
        return f"image_size {size!r} is not a size"
    return None


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DataParallel/DDP `module.` and torch.compile `_orig_mod.` key prefixes."""
    cleaned = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        cleaned[key] = value
    return cleaned
