"""The device a torch network runs on and its precision: CUDA when present, and bf16 autocast only
where it pays (on CUDA devices that support it, and on CPUs with native bf16 matrix kernels).

On CPUs, torch runs bf16 on oneDNN's native kernels where the CPU has AVX-512 BF16 or AMX
(measured ~3x faster than fp32 for a 256-wide MLP, with no loss of quality); elsewhere its bf16
matmul falls back to a reference kernel (measured 28x *slower* than fp32 on an AVX2-only AMD
EPYC): see :func:`cpu_has_native_bf16`.
"""

from __future__ import annotations

import torch

from nerfexport.deploy.machine import cpu


def pick_device(name: str = "auto") -> torch.device:
    """The torch device ``name`` names: ``auto`` is CUDA when torch sees a CUDA device, else the CPU.

    Args:
        name: ``auto`` or a torch device string (``cpu``, ``cuda``, ``cuda:1``).

    Returns:
        The device. Raises RuntimeError when CUDA is asked for and torch sees none (ValueError,
        from torch, for a string that names no device).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but torch sees no CUDA device")
    return dev


def cpu_has_native_bf16() -> bool:
    """Whether torch's CPU matmul runs bf16 on native instructions: oneDNN's bf16 kernels, on a
    CPU that advertises bf16 (AVX-512 BF16 or AMX on x86, ``bf16`` on Arm).

    Without them a bf16 ``Linear`` is slower than fp32: on an AVX2-only AMD EPYC it falls back to a
    scalar reference GEMM (a 256-wide MLP trained at 1.0k samples/s in bf16 against 28k in fp32);
    on an AVX-512 Intel Xeon without BF16 (Ice Lake, family 6 model 106) oneDNN says yes but
    emulates it, and a 65,536 x 8 x 256 MLP forward ran at 52 GFLOP/s in bf16 against 113 in fp32.
    Where the CPU's flags cannot be read (no ``/proc/cpuinfo``), oneDNN's answer stands."""
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    flags = cpu_flags()
    if flags is None:
        return onednn
    return onednn and bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``), or None."""
    flags = cpu().flags
    return None if flags is None else set(flags)


def bf16_warning(precision: str, device: torch.device | str = "cpu") -> str | None:
    """A one-line warning when ``precision`` asks for bf16 on a CPU without native bf16 kernels."""
    if precision == "bf16" and torch.device(device).type == "cpu" and not cpu_has_native_bf16():
        return ("warning: this CPU has no native bf16 matrix kernels (they need AVX-512); bf16 runs "
                "many times slower than fp32 here (precision auto picks fp32)")
    return None


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the network.

    Args:
        precision: ``fp32``, ``bf16`` or ``auto``: bf16 on CUDA devices that support it and on
            CPUs with native bf16 kernels (:func:`cpu_has_native_bf16`), fp32 everywhere else.
        device: The device the network runs on.

    Returns:
        ``torch.bfloat16``, or None for plain fp32. Raises ValueError for another precision.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
