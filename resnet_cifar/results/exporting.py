"""--mode export: a checkpoint's model as ONNX, TorchScript, a torch.export program or safetensors,
loaded back in its own runtime and checked against the PyTorch model before the command succeeds."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from resnet_cifar.errors import UserError
from resnet_cifar.utils.atomic_files import atomic_path, write_text

# Exported logits must match the PyTorch model's (fp32, eval mode) within
# |exported - torch| <= ATOL + RTOL * |torch|: float operations may be reordered by another runtime.
ATOL = 1e-4
RTOL = 1e-4
# safetensors holds tensors only: the classes, mean and std go in FILE.json beside it.
SIDECAR_FORMATS = ("safetensors",)
PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "safetensors": ("safetensors",)}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    n_images: int
    extra_files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()  # said once after the result, e.g. that the format is deprecated


def sidecar_of(fmt: str, path: Path) -> Path | None:
    """The metadata file written beside a format that cannot hold it (safetensors: its tensors only)."""
    return path.with_suffix(".json") if fmt in SIDECAR_FORMATS else None


SIDECAR_MARK = "resnet-cifar export metadata"


def sidecar_text(metadata: dict, output: Path) -> str:
    """The metadata file's text: the model's metadata, marked as written for that output."""
    return json.dumps({"written_by": SIDECAR_MARK, "weights_file": output.name, **metadata}, indent=2) + "\n"


def check_sidecar(fmt: str, output: Path) -> None:
    """The metadata file may be written: it is not the output itself, and it replaces only a
    metadata file this program wrote for the same output."""
    sidecar = sidecar_of(fmt, output)
    if sidecar is None:
        return
    if os.path.realpath(sidecar) == os.path.realpath(output):
        raise UserError(f"--output {output} would be its own metadata file ({sidecar.name}); name it "
                        f"{output.with_suffix('.' + fmt).name}")
    if not os.path.lexists(sidecar):
        return
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
    except (OSError, ValueError, RecursionError):
        recorded = None
    if not (isinstance(recorded, dict) and recorded.get("written_by") == SIDECAR_MARK
            and recorded.get("weights_file") == output.name):
        raise UserError(f"--output {output}'s metadata file {sidecar} exists and was not written for it by this "
                        f"program; move it away or choose another --output")


def require_packages(fmt: str) -> None:
    """One line naming what to install, before anything is written."""
    import importlib.util

    missing = [name for name in PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--format {fmt} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def export_model(model: nn.Module, fmt: str, path: Path, metadata: dict, check_inputs: torch.Tensor) -> ExportResult:
    """Write the model in `fmt` to path (atomically), load it back, compare logits on check_inputs.

    Nothing is left at path, or beside it, unless the check passed."""
    require_packages(fmt)
    path = Path(path)
    model = model.float().eval()
    writer, loader = _EXPORTERS[fmt]
    with torch.no_grad():
        expected = model(check_inputs)
    sidecar = sidecar_of(fmt, path)
    sidecars = {sidecar: sidecar_text(metadata, path)} if sidecar is not None else {}
    caught: list[warnings.WarningMessage] = []
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings(record=True) as caught:
                writer(model, tmp, check_inputs[:2], metadata)
                got = loader(tmp, check_inputs, metadata)
        except UserError:
            raise
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"--format {fmt} export failed ({reason})") from None
        finally:
            notes = notes_from_warnings(caught)  # a failed export still shows the warnings that came before
        diff = (got.float() - expected).abs().max().item()
        if not torch.allclose(got.float(), expected, rtol=RTOL, atol=ATOL):
            raise UserError(f"--format {fmt}: the exported model's logits differ from PyTorch's by up to {diff:.3g} "
                            f"(allowed {ATOL} + {RTOL} x |logit|); nothing was written")
        for sidecar, text in sidecars.items():
            write_text(sidecar, text)
    return ExportResult(path, diff, len(check_inputs), tuple(sidecars), notes)


def notes_from_warnings(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """torch's TorchScript deprecation warnings (three of them, each several lines, from trace,
    save and load) become one note; any other warning is shown as it would have been."""
    deprecated = False
    for warning in caught:
        if issubclass(warning.category, (FutureWarning, DeprecationWarning)) and "`torch.jit." in str(warning.message):
            deprecated = True
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if not deprecated:
        return ()
    return (f"torch {torch.__version__} marks TorchScript deprecated: the file works today, but prefer --format pt2 "
            f"or onnx for new deployments",)


def _dynamic_batch() -> tuple[dict, ...]:
    return ({0: torch.export.Dim("batch", min=1, max=65_536)},)


def _write_onnx(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> None:
    # The torch.export-based exporter (onnxscript); the batch dimension stays dynamic.
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=_dynamic_batch(),
                                input_names=["images"], output_names=["logits"])
    program.save(str(path))


def _run_onnx(path: Path, inputs: torch.Tensor, metadata: dict) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    return torch.from_numpy(logits)


def _write_torchscript(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> None:
    scripted = torch.jit.trace(model, example)
    torch.jit.save(scripted, str(path), _extra_files={"metadata.json": json.dumps(metadata)})


def _run_torchscript(path: Path, inputs: torch.Tensor, metadata: dict) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(inputs)


def _write_pt2(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, str(path), extra_files={"metadata.json": json.dumps(metadata)})


def _run_pt2(path: Path, inputs: torch.Tensor, metadata: dict) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(inputs)


def _write_safetensors(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"model": metadata["model"]})


def _run_safetensors(path: Path, inputs: torch.Tensor, metadata: dict) -> torch.Tensor:
    from safetensors.torch import load_file

    from resnet_cifar.models.registry import modeltype

    model = modeltype(metadata["model"], len(metadata["classes"]), **metadata.get("model_options", {})).eval()
    model.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return model(inputs)


_EXPORTERS: dict[str, tuple[Callable, Callable]] = {
    "onnx": (_write_onnx, _run_onnx),
    "torchscript": (_write_torchscript, _run_torchscript),
    "pt2": (_write_pt2, _run_pt2),
    "safetensors": (_write_safetensors, _run_safetensors),
}
