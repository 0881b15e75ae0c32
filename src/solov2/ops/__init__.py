"""Pure tensor operators used by SOLOv2 (no parameters, export-friendly)."""

from .masks import center_of_mass, masks_to_boxes, points_nms
from .matrix_nms import matrix_nms, matrix_nms_sorted

__all__ = ["center_of_mass", "masks_to_boxes", "matrix_nms", "matrix_nms_sorted", "points_nms"]
