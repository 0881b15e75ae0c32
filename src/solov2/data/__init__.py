"""Data pipeline: COCO reading, transforms, batching.

Names are imported on first use (PEP 562), so the CLI can register ``solov2 data`` (whose
module lives here) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "CocoInstances": "coco",
    "DataWarning": "coco",
    "load_coco_json": "coco",
    "ImageReadError": "io",
    "image_size": "io",
    "read_image": "io",
    "GroupedBatchSampler": "loader",
    "RankStridedSampler": "loader",
    "ShuffleSampler": "loader",
    "TrainLoader": "loader",
    "build_test_loader": "loader",
    "build_train_loader": "loader",
    "collate": "loader",
    "dataset_from_config": "loader",
    "DatasetStats": "stats",
    "LevelStats": "stats",
    "dataset_stats": "stats",
    "build_transforms": "transforms",
    "rescale_size": "transforms",
}
__all__ = [
    "CocoInstances",
    "DataWarning",
    "DatasetStats",
    "GroupedBatchSampler",
    "ImageReadError",
    "LevelStats",
    "RankStridedSampler",
    "ShuffleSampler",
    "TrainLoader",
    "build_test_loader",
    "build_train_loader",
    "build_transforms",
    "collate",
    "dataset_from_config",
    "dataset_stats",
    "image_size",
    "load_coco_json",
    "read_image",
    "rescale_size",
]

if TYPE_CHECKING:
    from .coco import CocoInstances, DataWarning, load_coco_json
    from .io import ImageReadError, image_size, read_image
    from .loader import (
        GroupedBatchSampler,
        RankStridedSampler,
        ShuffleSampler,
        TrainLoader,
        build_test_loader,
        build_train_loader,
        collate,
        dataset_from_config,
    )
    from .stats import DatasetStats, LevelStats, dataset_stats
    from .transforms import build_transforms, rescale_size


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'solov2.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
