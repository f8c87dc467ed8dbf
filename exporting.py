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

from errors import UserError

FORMATS = ("onnx", "torchscript", "pt2", "safetensors")
# Exported logits must match the PyTorch model's (fp32, eval mode) within
# |exported - torch| <= ATOL + RTOL * |torch|: float operations may be reordered by another runtime.
ATOL = 1e-4
RTOL = 1e-4
PACKAGES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "safetensors": ("safetensors",)}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    max_abs_diff: float
    n_images: int
    extra_files: tuple[Path, ...] = ()
    notes: tuple[str, ...] = ()  # said once after the result, e.g. that the format is deprecated


def require_packages(fmt: str) -> None:
    """One line naming what to install, before anything is written."""
    import importlib.util

    missing = [name for name in PACKAGES.get(fmt, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"--format {fmt} needs {', '.join(missing)}: pip install {' '.join(missing)}")


def export_model(model: nn.Module, fmt: str, path: Path, metadata: dict, check_inputs: torch.Tensor) -> ExportResult:
    """Write the model in `fmt` to path (atomically), load it back, compare logits on check_inputs."""
    require_packages(fmt)
    model = model.float().eval()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    writer, loader = _EXPORTERS[fmt]
    with torch.no_grad():
        expected = model(check_inputs)
    written = [tmp]

    def discard() -> None:
        for file in written:
            file.unlink(missing_ok=True)

    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            written += writer(model, tmp, check_inputs[:2], metadata)
            got = loader(tmp, check_inputs)
    except UserError:
        discard()
        raise
    except Exception as e:
        discard()
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--format {fmt} export failed ({reason})") from None
    finally:
        notes = notes_from_warnings(caught)  # a failed export still shows the warnings that came before
    diff = (got.float() - expected).abs().max().item()
    if not torch.allclose(got.float(), expected, rtol=RTOL, atol=ATOL):
        discard()
        raise UserError(f"--format {fmt}: the exported model's logits differ from PyTorch's by up to {diff:.3g} "
                        f"(allowed {ATOL} + {RTOL} x |logit|); nothing was written")
    os.replace(tmp, path)
    extra_files = []
    for sidecar_tmp in written[1:]:
        final = sidecar_tmp.with_name(sidecar_tmp.name.removeprefix(".").removesuffix(".tmp"))
        os.replace(sidecar_tmp, final)
        extra_files.append(final)
    return ExportResult(path, diff, len(check_inputs), tuple(extra_files), notes)


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


def _write_onnx(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> tuple[Path, ...]:
    # The torch.export-based exporter (onnxscript); the batch dimension stays dynamic.
    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=_dynamic_batch(),
                                input_names=["images"], output_names=["logits"])
    program.save(str(path))
    return ()


def _run_onnx(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})
    return torch.from_numpy(logits)


def _write_torchscript(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> tuple[Path, ...]:
    scripted = torch.jit.trace(model, example)
    torch.jit.save(scripted, str(path), _extra_files={"metadata.json": json.dumps(metadata)})
    return ()


def _run_torchscript(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.jit.load(str(path), map_location="cpu")(inputs)


def _write_pt2(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> tuple[Path, ...]:
    program = torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    torch.export.save(program, str(path), extra_files={"metadata.json": json.dumps(metadata)})
    return ()


def _run_pt2(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(inputs)


def _sidecar(path: Path) -> Path:
    """FILE.safetensors -> .FILE.json.tmp (renamed to FILE.json once the check passed)."""
    final = path.with_name(path.name.removeprefix(".").removesuffix(".tmp")).with_suffix(".json")
    return final.with_name(f".{final.name}.tmp")


def _write_safetensors(model: nn.Module, path: Path, example: torch.Tensor, metadata: dict) -> tuple[Path, ...]:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"model": metadata["model"]})
    sidecar = _sidecar(path)
    sidecar.write_text(json.dumps(metadata, indent=2) + "\n")
    return (sidecar,)


def _run_safetensors(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    from safetensors.torch import load_file

    from models import modeltype

    metadata = json.loads(_sidecar(path).read_text())
    model = modeltype(metadata["model"], len(metadata["classes"])).eval()
    model.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        return model(inputs)


_EXPORTERS: dict[str, tuple[Callable, Callable]] = {
    "onnx": (_write_onnx, _run_onnx),
    "torchscript": (_write_torchscript, _run_torchscript),
    "pt2": (_write_pt2, _run_pt2),
    "safetensors": (_write_safetensors, _run_safetensors),
}
