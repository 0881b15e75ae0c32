"""The 80 COCO class names (contiguous label order) and their COCO category ids; the class
names and category ids of a config's labels."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free and config-free at run time
    from ..config import Config

__all__ = ["COCO_CATEGORY_IDS", "COCO_CLASSES", "category_ids_of", "class_names_of"]

logger = logging.getLogger("solov2")

COCO_CLASSES: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# COCO 2017 category id of each contiguous label (ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 unused)
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    27,
    28,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    39,
    40,
    41,
    42,
    43,
    44,
    46,
    47,
    48,
    49,
    50,
    51,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    60,
    61,
    62,
    63,
    64,
    65,
    67,
    70,
    72,
    73,
    74,
    75,
    76,
    77,
    78,
    79,
    80,
    81,
    82,
    84,
    85,
    86,
    87,
    88,
    89,
    90,
)

assert len(COCO_CLASSES) == len(COCO_CATEGORY_IDS) == 80


def class_names_of(cfg: Config) -> list[str]:
    """``cfg.data.class_names`` when it has one name per class, else ``class_{i}``."""
    n = cfg.model.num_classes
    names = list(cfg.data.class_names)
    if len(names) == n:
        return names
    if names:
        logger.warning("config has %d class names for %d classes; using class_{i}", len(names), n)
    return [f"class_{i}" for i in range(n)]


def category_ids_of(cfg: Config, class_names: Sequence[str]) -> list[int]:
    """COCO ``category_id`` of each label.

    In order: ``cfg.data.category_ids`` if the config has one entry per class; the official COCO
    ids when the class names are the 80 COCO classes; otherwise ``label + 1`` (the ids of a
    dataset whose categories are numbered 1..C in sorted order, as :mod:`solov2.data.coco` maps
    them).
    """
    ids = getattr(cfg.data, "category_ids", None)
    if ids and len(ids) == len(class_names):
        return [int(i) for i in ids]
    if tuple(class_names) == COCO_CLASSES:
        return list(COCO_CATEGORY_IDS)
    return [i + 1 for i in range(len(class_names))]
