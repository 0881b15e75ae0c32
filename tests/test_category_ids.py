"""The dataset's category ids travel with the model (issue 27): how a model's labels map onto
an evaluation dataset's categories, and what a config without ids gets."""

from __future__ import annotations

import logging

import pytest

from solov2.config import ConfigError, apply_overrides
from solov2.data.coco_names import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    complete_categories,
    dataset_category_ids,
)
from solov2.errors import UserError
from solov2.presets import get_config

NAMES = ["circle", "square", "triangle", "star"]
IDS = [1, 3, 7, 9]


def test_labels_map_onto_the_dataset_by_id_then_by_name() -> None:
    where = "val.json"
    # a model trained on this dataset: its own ids
    assert dataset_category_ids((IDS, NAMES), (IDS, NAMES), where) == (IDS, None)
    # the dataset lists its categories in another order: still by id, per label
    assert dataset_category_ids((IDS, NAMES), (IDS[::-1], NAMES[::-1]), where) == (IDS, None)
    # a checkpoint from before the ids were stored (1..4 assumed): by name, and said
    ids, note = dataset_category_ids(([1, 2, 3, 4], NAMES), (IDS, NAMES), where)
    assert ids == IDS
    assert note == (
        "val.json: the checkpoint's category ids differ from the dataset's; matched by name "
        "('square' 2 -> 3, 'triangle' 3 -> 7, 'star' 4 -> 9)"
    )
    # the same ids naming other categories, renamed classes, another count: one-line errors
    with pytest.raises(UserError) as e:
        dataset_category_ids((IDS, NAMES), (IDS, ["a", "b", "c", "d"]), where)
    assert str(e.value) == (
        "val.json: the dataset's categories (1 'a', 3 'b', 7 'c', 9 'd') are not the "
        "checkpoint's (1 'circle', 3 'square', 7 'triangle', 9 'star'): neither ids nor "
        "names match"
    )
    with pytest.raises(UserError, match="5 categories but the checkpoint predicts 4"):
        dataset_category_ids((IDS, NAMES), ([*IDS, 11], [*NAMES, "moon"]), where)
    # two dataset categories of one name cannot be told apart by name
    with pytest.raises(UserError, match="neither ids nor names match"):
        dataset_category_ids(([1, 2, 3, 4], NAMES), (IDS, ["circle", "circle", "x", "y"]), where)


def test_configs_without_ids(caplog: pytest.LogCaptureFixture) -> None:
    """Ids 1..N assumed for a config from before (one warning per source), COCO's for COCO's
    80 classes; a config with ids keeps them; ids must be distinct."""
    cfg = get_config("solov2_demo")
    cfg.data.class_names = list(NAMES)
    with caplog.at_level(logging.WARNING, logger="solov2"):
        complete_categories(cfg, "old_run/model_final.pth")
    assert cfg.data.category_ids == [1, 2, 3, 4]
    assert [r.getMessage() for r in caplog.records] == [
        "old_run/model_final.pth stores no category ids (trained before they were saved): "
        "ids 1..4 assumed in class order; if the training dataset numbers its categories "
        "otherwise, pass data.category_ids=[...] (its ids in the order of data.class_names)"
    ]
    caplog.clear()
    cfg.data.category_ids = list(IDS)
    complete_categories(cfg, "old_run/model_final.pth")
    assert cfg.data.category_ids == IDS and not caplog.records
    coco = get_config("solov2_r50_fpn_1x")
    coco.data.class_names = [n.replace(" ", "_") for n in COCO_CLASSES]  # mmdetection v1
    with caplog.at_level(logging.WARNING, logger="solov2"):
        complete_categories(coco, "coco.pth")
    assert coco.data.category_ids == list(COCO_CATEGORY_IDS) and not caplog.records
    assert coco.data.class_names == list(COCO_CLASSES)
    with pytest.raises(ConfigError, match=r"data.category_ids=\[1, 1\]: must be distinct"):
        apply_overrides(get_config("solov2_demo"), ["data.category_ids=[1,1]"])
