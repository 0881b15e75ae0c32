"""Inference: a batched :class:`Predictor` and its :class:`Results`, one model loader (:mod:`.loading`), preprocessing,
huge images, the fast path, the input files of ``solov2 infer`` and ONNX export.

Names are imported on first use (PEP 562), so ``import solov2.infer`` stays cheap (ONNX loads
only when used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..data.draw import draw_predictions, save_png
    from .loading import load_for_inference
    from .predictor import Predictor
    from .preprocess import preprocess_images, resize_keep_ratio_size
    from .results import Results

__all__ = [
    "Predictor",
    "Results",
    "draw_predictions",
    "load_for_inference",
    "preprocess_images",
    "resize_keep_ratio_size",
    "save_png",
]

_WHERE = {
    "Predictor": ".predictor",
    "Results": ".results",
    "load_for_inference": ".loading",
    "preprocess_images": ".preprocess",
    "resize_keep_ratio_size": ".preprocess",
    "draw_predictions": "..data.draw",
    "save_png": "..data.draw",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
