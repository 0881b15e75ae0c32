"""Inference: a batched :class:`Predictor`, visualisation, the ``infer`` command and ONNX export.

Imports are lazy so ``import solov2.infer`` stays cheap (ONNX and tqdm load only when used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .predictor import Predictor
    from .preprocess import preprocess_images, resize_keep_ratio_size
    from .visualize import draw_predictions, save_png

__all__ = [
    "Predictor",
    "draw_predictions",
    "preprocess_images",
    "resize_keep_ratio_size",
    "save_png",
]

_WHERE = {
    "Predictor": "predictor",
    "preprocess_images": "preprocess",
    "resize_keep_ratio_size": "preprocess",
    "draw_predictions": "visualize",
    "save_png": "visualize",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
