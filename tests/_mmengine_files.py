"""Checkpoint files shaped like mmdetection / mmengine's, built locally for the tests.

Our tiny ``solov2_demo`` (or any preset) model renamed into the mmdet layout (the converter's
inverse table), saved like mmdetection's ``publish_model`` (legacy torch format by default),
with mmengine-style metadata: a pickled ``mmengine.logging.message_hub.MessageHub`` holding
numpy arrays, numpy scalars, and a :class:`Payload` whose unpickling would run ``os.system``.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from solov2.convert import RENAMES
from solov2.model import build_model

CLASSES = ("circle", "square", "triangle", "star")


class Payload:
    """Unpickling this runs ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _fake_mmengine() -> dict[str, Any]:
    """Classes named like mmengine's, in stand-in modules (pickle checks the import path)."""

    class HistoryBuffer:
        def __init__(self) -> None:
            self._log_history = np.arange(5, dtype=np.float64)
            self._count_history = np.ones(5)

    class MessageHub:
        def __init__(self) -> None:
            self.log_scalars = {"train/loss": HistoryBuffer()}
            self.runtime_info = {"iter": 1000, "epoch": np.int64(36)}

    mods = {}
    for name, cls in (
        ("mmengine.logging.history_buffer", HistoryBuffer),
        ("mmengine.logging.message_hub", MessageHub),
    ):
        mod = types.ModuleType(name)
        cls.__module__, cls.__qualname__ = name, cls.__name__
        setattr(mod, cls.__name__, cls)
        mods[name] = mod
    return mods


def to_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        for old, new in RENAMES["mmdet"]:
            if k.startswith(new):
                k = old + k[len(new) :]
                break
        out[k] = v
    return out


def save_mmengine_file(
    path: Path,
    state: dict[str, torch.Tensor],
    marker: Path,
    evil_in_weights: bool = False,
    legacy: bool = True,
    classes: tuple[str, ...] = CLASSES,
) -> None:
    mods = _fake_mmengine()
    saved = {n: sys.modules.get(n) for n in ("mmengine", "mmengine.logging", *mods)}
    sys.modules.update(
        {
            "mmengine": types.ModuleType("mmengine"),
            "mmengine.logging": types.ModuleType("mmengine.logging"),
            **mods,
        }
    )
    try:
        weights = to_mmdet(state)
        if evil_in_weights:
            weights["mask_head.conv_cls.weight"] = Payload(marker)  # type: ignore[assignment]
        hub = mods["mmengine.logging.message_hub"].MessageHub()
        ckpt = {
            "meta": {
                "mmengine_version": "0.7.3",
                "epoch": 36,
                "iter": 1000,
                "cfg": "model = dict(type='SOLOv2')",
                "seed": np.int64(0),
                "dataset_meta": {"classes": classes, "palette": [(220, 20, 60)] * 4},
                "note": Payload(marker),
            },
            "state_dict": weights,
            "message_hub": hub,
            "param_schedulers": [{"base_lrs": [0.01], "last_step": 36}],
        }
        torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def random_state(preset: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(preset)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the init values: a wrong mapping shows
    return model.state_dict()
