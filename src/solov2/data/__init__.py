"""Data pipeline: COCO reading, transforms, batching."""

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
from .transforms import boxes_from_masks, build_transforms, rescale_size

__all__ = [
    "CocoInstances",
    "DataWarning",
    "DatasetStats",
    "GroupedBatchSampler",
    "LevelStats",
    "ImageReadError",
    "RankStridedSampler",
    "ShuffleSampler",
    "TrainLoader",
    "boxes_from_masks",
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
