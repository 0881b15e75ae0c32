"""RNG states as plain tensors and numbers, so that a resume checkpoint holding them loads with
``torch.load(weights_only=True)``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state"]


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA RNG states as tensors/numbers (weights_only safe)."""
    version, mt, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64).copy()),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured; missing parts are skipped.

    CUDA states are restored for as many devices as both the checkpoint and this machine have.
    """
    py = state.get("python")
    if py is not None:
        mt = tuple(int(x) for x in torch.as_tensor(py["state"]).tolist())
        gauss = py.get("gauss_next")
        random.setstate((int(py["version"]), mt, None if gauss is None else float(gauss)))
    npst = state.get("numpy")
    if npst is not None:
        keys = torch.as_tensor(npst["keys"]).numpy().astype(np.uint32)
        np.random.set_state(
            (
                str(npst["name"]),
                keys,
                int(npst["pos"]),
                int(npst["has_gauss"]),
                float(npst["cached_gaussian"]),
            )
        )
    cpu = state.get("torch")
    if cpu is not None:
        torch.set_rng_state(torch.as_tensor(cpu, dtype=torch.uint8).cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.as_tensor(s, dtype=torch.uint8).cpu(), device=i)
