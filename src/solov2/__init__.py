"""SOLOv2 instance segmentation in pure PyTorch.

Public API: :func:`build_model`, :class:`SOLOv2`, :class:`Predictor` (and the
:class:`Results` it returns), :func:`load_for_inference`, the config system (:class:`Config`, :func:`get_config`,
:data:`PRESETS`, :func:`apply_overrides`), the pure functions :func:`build_targets`,
:func:`solov2_losses` and :func:`matrix_nms`, and :class:`PostProcessor`.

The names are imported on first use (PEP 562), so ``import solov2`` and ``solov2 --help`` do not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": ".config",
    "apply_overrides": ".config",
    "Predictor": ".infer.predictor",
    "Results": ".infer.results",
    "load_for_inference": ".infer.loading",
    "solov2_losses": ".losses",
    "SOLOv2": ".model",
    "build_model": ".model",
    "matrix_nms": ".ops",
    "PostProcessor": ".postprocess",
    "PRESETS": ".presets",
    "get_config": ".presets",
    "build_targets": ".targets",
}

__all__ = [
    "Config",
    "PRESETS",
    "PostProcessor",
    "Predictor",
    "Results",
    "SOLOv2",
    "__version__",
    "apply_overrides",
    "build_model",
    "build_targets",
    "get_config",
    "load_for_inference",
    "matrix_nms",
    "solov2_losses",
]

if TYPE_CHECKING:
    from .config import Config, apply_overrides
    from .infer.loading import load_for_inference
    from .infer.predictor import Predictor
    from .infer.results import Results
    from .losses import solov2_losses
    from .model import SOLOv2, build_model
    from .ops import matrix_nms
    from .postprocess import PostProcessor
    from .presets import PRESETS, get_config
    from .targets import build_targets


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'solov2' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
