"""The 80 COCO class names (contiguous label order) and their COCO category ids; the class
names and category ids of a config's labels, and how a model's labels map onto a dataset's
categories."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:  # torch-free and config-free at run time
    from ..config import Config

__all__ = [
    "COCO_CATEGORY_IDS",
    "COCO_CLASSES",
    "category_ids_of",
    "class_names_of",
    "complete_categories",
    "dataset_category_ids",
    "is_coco_classes",
]

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


def is_coco_classes(names: Sequence[str]) -> bool:
    """COCO's 80 class names in COCO's order, also as mmdetection v1 (the official SOLO
    checkpoints' ``meta.CLASSES``) spelled them: ``traffic_light`` for ``traffic light``."""
    return len(names) == len(COCO_CLASSES) and all(
        str(n).replace("_", " ") == c for n, c in zip(names, COCO_CLASSES)
    )


_said: set[str] = set()  # sources already warned about (once per process)


def category_ids_of(
    cfg: Config, class_names: Sequence[str], source: str | None = None
) -> list[int]:
    """The dataset's COCO ``category_id`` of each label.

    In order: ``cfg.data.category_ids`` (stored at training time since issue 27) when it has
    one entry per class; the official COCO ids when the class names are COCO's 80
    (:func:`is_coco_classes`); otherwise ``1..N`` in label order, the ids of a dataset
    numbered ``1..N``, with a warning naming ``source`` (once per source and process): a
    checkpoint trained before the ids were stored does not know them.
    """
    ids = list(cfg.data.category_ids)
    if ids and len(ids) == len(class_names):
        return [int(i) for i in ids]
    if ids:
        logger.warning(
            "%s: %d data.category_ids for %d classes; ignored",
            source or f"config {cfg.name}",
            len(ids),
            len(class_names),
        )
    if is_coco_classes(class_names):
        return list(COCO_CATEGORY_IDS)
    n = len(class_names)
    where = source or f"config {cfg.name}"
    if where not in _said:
        _said.add(where)
        logger.warning(
            "%s stores no category ids (trained before they were saved): ids 1..%d assumed in "
            "class order; if the training dataset numbers its categories otherwise, pass "
            "data.category_ids=[...] (its ids in the order of data.class_names)",
            where,
            n,
        )
    return list(range(1, n + 1))


def complete_categories(cfg: Config, source: str) -> None:
    """Give a config without ``data.category_ids`` its ids, in place (:func:`category_ids_of`;
    a config that has them is left alone). COCO's 80 classes get COCO's ids and COCO's
    spelling of the names (mmdetection v1 wrote ``traffic_light``)."""
    if len(cfg.data.category_ids) == cfg.model.num_classes:
        return
    names = class_names_of(cfg)
    if is_coco_classes(names):
        cfg.data.class_names = list(COCO_CLASSES)
    cfg.data.category_ids = category_ids_of(cfg, names, source)


def _pairs(ids: Sequence[int], names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(f"{i} {n!r}" for i, n in list(zip(ids, names))[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


def dataset_category_ids(
    model: tuple[Sequence[int], Sequence[str]],
    dataset: tuple[Sequence[int], Sequence[str]],
    where: str,
) -> tuple[list[int], str | None]:
    """The dataset's category id of each model label, and a note when they were matched by name.

    Args:
        model: ``(category ids, class names)`` of the model's labels (its config).
        dataset: ``(category ids, names)`` of the dataset's categories.
        where: the dataset file, for messages.

    By id when the model's ids are the dataset's (a note names the classes whose names
    differ); else by name when the model's names are the dataset's (a checkpoint trained before
    the ids were stored, or on a copy of the dataset numbered otherwise): the note says which
    ids moved.

    Raises:
        UserError: another number of categories, or categories matching neither by id nor by
            name (one line naming both).
    """
    m_ids, m_names = [int(i) for i in model[0]], [str(n) for n in model[1]]
    d_ids, d_names = [int(i) for i in dataset[0]], [str(n) for n in dataset[1]]
    if len(m_ids) != len(d_ids):
        raise UserError(
            f"{where}: {len(d_ids)} categories but the checkpoint predicts {len(m_ids)}"
        )
    by_id = dict(zip(d_ids, d_names))
    if len(set(m_ids)) == len(m_ids) and set(m_ids) == set(by_id):
        renamed = [f"{i} {n!r} -> {by_id[i]!r}" for i, n in zip(m_ids, m_names) if by_id[i] != n]
        if not renamed:
            return m_ids, None
        return m_ids, (
            f"{where}: the same category ids under other names ({', '.join(renamed[:4])}"
            f"{', ...' if len(renamed) > 4 else ''}); scored by id"
        )
    by_name = {n: i for i, n in zip(d_ids, d_names)}
    if len(set(m_names)) == len(m_names) == len(by_name) and set(m_names) == set(by_name):
        mapped = [by_name[n] for n in m_names]
        moved = [f"{n!r} {a} -> {b}" for n, a, b in zip(m_names, m_ids, mapped) if a != b]
        note = (
            f"{where}: the checkpoint's category ids differ from the dataset's; matched by "
            f"name ({', '.join(moved[:4])}{', ...' if len(moved) > 4 else ''})"
        )
        return mapped, note
    raise UserError(
        f"{where}: the dataset's categories ({_pairs(d_ids, d_names)}) are not the "
        f"checkpoint's ({_pairs(m_ids, m_names)}): neither ids nor names match"
    )
