"""Devices and autocast dtypes by name (``--device``, ``--amp``)."""

from __future__ import annotations

import torch

__all__ = ["autocast_dtype", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(amp: str) -> torch.dtype | None:
    """``"bf16"`` -> bfloat16, ``"fp16"`` -> float16, ``"none"`` -> None."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
