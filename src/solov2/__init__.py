"""SOLOv2 instance segmentation in pure PyTorch."""

from .config import Config, apply_overrides
from .presets import PRESETS, get_config

__version__ = "0.1.0"

__all__ = ["Config", "PRESETS", "apply_overrides", "get_config", "__version__"]
