"""Which device to run on: the best one present, and a clear word when a GPU is there but unusable."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

#: where the NVIDIA kernel driver says its version (Linux)
NVIDIA_DRIVER_FILE = Path("/proc/driver/nvidia/version")


def unusable_gpu_reason(driver_file: Path = NVIDIA_DRIVER_FILE) -> str | None:
    """Why a GPU this machine has cannot be used by this torch, or None (no NVIDIA driver, or CUDA works).

    The usual cause: a driver older than the CUDA runtime of the installed torch build, which makes
    ``torch.cuda.is_available()`` False without a word, so everything quietly runs on CPU."""
    if torch.cuda.is_available() or not driver_file.is_file():
        return None
    text = driver_file.read_text(errors="replace")
    version = next((part for part in text.split() if part.count(".") >= 1 and part.replace(".", "").isdigit()), "?")
    return (f"an NVIDIA GPU is present (driver {version}) but torch {torch.__version__} cannot use it: this build needs "
            f"a driver for CUDA {torch.version.cuda or '(none: a CPU-only build)'}. Update the driver, or install a "
            "torch build for the CUDA your driver supports; running on CPU meanwhile")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast here: CUDA with bf16, or a CPU with bf16 instructions (AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def best_device() -> torch.device:
    """CUDA when it works, else CPU, warning once when a GPU is present but unusable."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    reason = unusable_gpu_reason()
    if reason:
        warnings.warn(reason, RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device running out of memory: CUDA's OutOfMemoryError, or the CPU allocator's
    RuntimeError ("DefaultCPUAllocator: can't allocate memory …")."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("alloc" in text or "out of memory" in text)


def tune_cuda_math(device: torch.device | str, fixed_shapes: bool) -> None:
    """On a CUDA device: TF32 tensor cores for fp32 matmuls and convolutions (10-bit mantissa products, fp32
    sums: the fp32 paths — full-precision training, the fp32 references, inference without bf16 — run several
    times faster on Ampere and later), and, where every call has the same shapes (training), cuDNN's autotuner,
    which times each convolution's algorithms once. Not with ``torch.use_deterministic_algorithms(True)``: its
    user asked for repeatable kernels, and the autotuner's choice may differ from run to run. A no-op elsewhere."""
    if torch.device(device).type != "cuda":
        return
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    if fixed_shapes and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True
