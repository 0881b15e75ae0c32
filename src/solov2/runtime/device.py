"""Devices and autocast dtypes by name (``--device``, ``--amp``)."""

from __future__ import annotations

import logging

import torch

from ..errors import UserError

__all__ = ["autocast_dtype", "resolve_device", "warn_slow_amp"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given.

    Raises:
        UserError: a name torch does not know, or ``cuda`` on a machine without a CUDA device
            (one line, as ``train`` and ``eval`` say it, instead of torch's traceback at the
            first tensor moved there).
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UserError(f"device: {device!r} is not a device ({str(e).splitlines()[0]})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was requested but no CUDA device is available")
    return dev


def warn_slow_amp(amp: str, device: torch.device) -> None:
    """One warning when fp16 autocast runs on the CPU, where it is emulated: a demo training
    step took 190 s against 1.45 s in float32 and 1.52 s in bf16 (docs/RELIABILITY.md)."""
    if amp == "fp16" and device.type == "cpu":
        logging.getLogger("solov2").warning(
            "amp=fp16 on the CPU is slow (fp16 autocast is emulated there: a demo training "
            "step took 30-130x as long); use --amp bf16 or --amp none"
        )


def autocast_dtype(amp: str) -> torch.dtype | None:
    """``"bf16"`` -> bfloat16, ``"fp16"`` -> float16, ``"none"`` -> None."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
