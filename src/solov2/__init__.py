"""SOLOv2 instance segmentation in pure PyTorch.

Public API: :func:`build_model`, :class:`SOLOv2`, :class:`Predictor`, the config system
(:class:`Config`, :func:`get_config`, :data:`PRESETS`, :func:`apply_overrides`), the pure
functions :func:`build_targets`, :func:`solov2_losses`, :func:`postprocess` and
:func:`matrix_nms`.
"""

from .config import Config, apply_overrides
from .infer.predictor import Predictor
from .losses import solov2_losses
from .model import SOLOv2, build_model
from .ops import matrix_nms
from .postprocess import postprocess
from .presets import PRESETS, get_config
from .targets import build_targets

__version__ = "0.1.0"

__all__ = ["Config", "PRESETS", "Predictor", "SOLOv2", "__version__", "apply_overrides",
           "build_model", "build_targets", "get_config", "matrix_nms", "postprocess",
           "solov2_losses"]
