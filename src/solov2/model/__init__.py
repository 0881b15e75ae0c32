"""SOLOv2 network modules (raw head outputs only; no losses, no post-processing)."""

from .build import build_model
from .solov2 import HeadOutputs, SOLOv2

__all__ = ["HeadOutputs", "SOLOv2", "build_model"]
