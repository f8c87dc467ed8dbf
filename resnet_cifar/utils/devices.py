"""Where a run computes and in which precision: device choice, autocast, determinism flags."""
from __future__ import annotations

import contextlib
import os

import torch

from resnet_cifar.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"invalid --device {name!r}; choose auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"invalid --device {name!r}; choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here (cuda:0.."
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    return device


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX512-BF16 or AMX)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def resolve_precision(device: torch.device, precision: str, channels_last: bool | None) -> tuple[str, bool]:
    """Choose (precision, channels_last) for 'auto' from measurements (bench/precision_matrix.py).

    CPU with native bf16 (AVX512-BF16/AMX): bf16 + channels_last trains ResNet-18 2.7x faster
    than fp32 NCHW on a 2-core AVX512-BF16 CPU (bench/README.md). On another CPU bf16 NCHW and fp32 channels_last
    were each ~3x *slower* than fp32 NCHW, so the pair is chosen together or not at all, and
    without native bf16 fp32 NCHW is kept. CUDA: bf16 where supported (no loss scaling needed),
    else fp16 with a GradScaler; channels_last lets cuDNN use its NHWC tensor-core kernels.
    """
    if device.type == "cuda":
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision, True if channels_last is None else channels_last
    if precision == "auto":
        precision = "bf16" if cpu_has_fast_bf16() else "fp32"
    if channels_last is None:
        channels_last = precision == "bf16"
    return precision, channels_last


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The one mixed-precision context for every device and precision (disabled for fp32)."""
    dtype = AUTOCAST_DTYPES.get(precision, torch.float32)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision in AUTOCAST_DTYPES)


def configure_determinism(device: torch.device, deterministic: bool) -> None:
    """Set torch's global algorithm flags for this run (called once per run, never at import)."""
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible results (CUDA docs, "Reproducibility").
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: autotuning pays for itself
