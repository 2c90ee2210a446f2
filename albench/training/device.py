"""Device selection and mixed-precision settings."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from albench.errors import AlbenchError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn a device name into a ``torch.device``: ``None`` or ``"auto"`` -> ``cuda`` if available,
    else ``cpu``; otherwise any torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises AlbenchError naming the device when the name is invalid or the device is unavailable."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec.strip() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise AlbenchError(
            f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:<index>' ({exc})"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AlbenchError(
                f"device {spec!r} was requested but CUDA is not available in this torch build or on "
                "this machine; use --device cpu (or 'auto')"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise AlbenchError(
                f"device {spec!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise AlbenchError(f"device {spec!r} was requested but MPS is not available; use 'cpu'")
    elif dev.type != "cpu":
        raise AlbenchError(f"device {spec!r} is not supported by albench; use 'auto', 'cpu' or 'cuda'")
    return dev


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``. A CPU tensor bound for CUDA is staged in pinned memory and copied
    without blocking the host, so small per-step tensors (random draws, batch indices) do not
    make the host wait for the GPU's queue; elsewhere the same as ``t.to(device)``."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (True, False or "auto") on ``device``, or None for full
    float32. "auto" means on for CUDA, off elsewhere; on CUDA bf16 is used where supported, else fp16."""
    if isinstance(amp, str):
        if amp != "auto":
            raise AlbenchError(f"amp must be true, false or 'auto', got {amp!r}")
        amp = device.type == "cuda"
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(dtype: torch.dtype | None, device: torch.device) -> ContextManager:
    """autocast context for ``dtype`` on ``device``, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
