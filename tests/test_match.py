"""Instance-matching metrics (``solov2.evaluation.match``) against hand-counted cases.

Masks are rectangles on tiny images, so every IoU is a fraction counted by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from solov2.evaluation.coco_eval import _json_safe
from solov2.evaluation.match import (
    IOU_THRESHOLDS,
    ImageInstances,
    match_coco,
    match_instances,
)
from solov2.evaluation.match_table import format_match_table

H, W = 10, 20
CELL, BLOB, GHOST = 1, 2, 3
CATS, NAMES = [CELL, BLOB, GHOST], ["cell", "blob", "ghost"]
LOW = IOU_THRESHOLDS[:4]  # 0.5 .. 0.65
HIGH = IOU_THRESHOLDS[4:]  # 0.7 .. 0.95


def rect(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> dict:
    m = np.zeros((h, w), dtype=np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(m)
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def image_a() -> ImageInstances:
    """Three classes, a crowd region, a prediction below the score threshold."""
    gt = [
        (rect(0, 4, 0, 5), CELL, False),  # G1: 20 px
        (rect(5, 10, 0, 5), CELL, False),  # G2: 25 px
        (rect(0, 5, 10, 15), BLOB, False),  # G3: 25 px
        (rect(0, 10, 15, 20), CELL, True),  # crowd region
    ]
    dt = [
        (rect(0, 4, 0, 5), CELL, 0.9),  # P1 = G1: IoU 1
        (rect(5, 10, 1, 6), CELL, 0.8),  # P2 on G2: 20 / 30 = 0.667
        (rect(2, 6, 16, 19), CELL, 0.7),  # P3 inside the crowd region: ignored
        (rect(7, 10, 8, 10), CELL, 0.6),  # P4 on background: FP
        (rect(0, 5, 10, 15), BLOB, 0.2),  # P5 = G3, below score_thr 0.3
        (rect(0, 4, 0, 5), GHOST, 0.5),  # P6: G1's mask, a class without ground truth
    ]
    return ImageInstances(
        [g for g, _, _ in gt],
        [c for _, c, _ in gt],
        [k for _, _, k in gt],
        [d for d, _, _ in dt],
        [c for _, c, _ in dt],
        [s for _, _, s in dt],
    )


def image_b() -> ImageInstances:
    """No ground truth, one prediction: a false positive."""
    return ImageInstances(dt=[rect(0, 3, 0, 3)], dt_category=[CELL], dt_score=[0.95])


def image_c() -> ImageInstances:
    """Two cells, no predictions: two misses."""
    return ImageInstances(
        gt=[rect(0, 3, 0, 3), rect(5, 8, 5, 8)], gt_category=[CELL, CELL], gt_crowd=[False, False]
    )


def image_d() -> ImageInstances:
    """Nothing at all: left out of the per-image means."""
    return ImageInstances()


def counts(c, thresholds) -> set[tuple[int, int, int]]:
    return {(c.at(t).tp, c.at(t).fp, c.at(t).fn) for t in thresholds}


def test_hand_counted_dataset() -> None:
    r = match_instances([image_a(), image_b(), image_c(), image_d()], CATS, NAMES)
    cell, blob, ghost = r.per_class
    assert [c.name for c in r.per_class] == NAMES and r.score_thr == 0.3
    # cell: A gives P1 TP, P2 TP while t <= 0.65 (else FP + G2 FN), P3 ignored, P4 FP;
    # B one FP; C two FN
    assert counts(cell, LOW) == {(2, 2, 2)} and counts(cell, HIGH) == {(1, 3, 3)}
    t = cell.at(0.5)
    assert (t.precision, t.recall, t.f1, t.accuracy) == (0.5, 0.5, 0.5, pytest.approx(1 / 3))
    t = cell.at(0.75)
    assert (t.precision, t.recall, t.f1) == (0.25, 0.25, 0.25)
    assert t.accuracy == pytest.approx(1 / 7)
    assert cell.dsb_score_pooled == pytest.approx((4 / 3 + 6 / 7) / 10)
    # per image: A 2/3 at low t, 1/4 at high t; B 0; C 0; D has no cells: left out
    assert cell.images == 3
    assert cell.dsb_score == pytest.approx(((4 * 2 / 3 + 6 / 4) / 10 + 0 + 0) / 3)
    assert cell.mean()["accuracy"] == pytest.approx(cell.dsb_score_pooled)
    assert cell.mean()["recall"] == pytest.approx((4 * 0.5 + 6 * 0.25) / 10)
    # blob: its one prediction is below the score threshold: G3 is missed everywhere
    assert counts(blob, IOU_THRESHOLDS) == {(0, 0, 1)}
    assert math.isnan(blob.at(0.5).precision) and blob.at(0.5).recall == 0
    assert blob.images == 1 and blob.dsb_score == 0
    # ghost: no ground truth; its prediction does not match G1 (another class)
    assert counts(ghost, IOU_THRESHOLDS) == {(0, 1, 0)}
    assert ghost.at(0.5).precision == 0 and math.isnan(ghost.at(0.5).recall)
    assert ghost.at(0.5).f1 == 0 and ghost.dsb_score == 0 and ghost.images == 1
    # all classes pooled
    o = r.overall
    assert counts(o, LOW) == {(2, 3, 3)} and counts(o, HIGH) == {(1, 4, 4)}
    assert o.images == 3  # D left out
    a_low, a_high = 2 / (2 + 2 + 1), 1 / (1 + 3 + 2)  # image A: P4, P6 FP; G3 FN
    assert o.dsb_score == pytest.approx(((4 * a_low + 6 * a_high) / 10) / 3)
    assert o.dsb_score_pooled == pytest.approx((4 * 2 / 8 + 6 * 1 / 9) / 10)


def test_score_threshold_is_a_parameter() -> None:
    r = match_instances([image_a()], CATS, NAMES, score_thr=0.1)
    assert counts(r.per_class[1], IOU_THRESHOLDS) == {(1, 0, 0)}  # P5 now counts: G3 found
    r = match_instances([image_a()], CATS, NAMES, score_thr=0.85)  # only P1 is kept
    assert counts(r.per_class[0], IOU_THRESHOLDS) == {(1, 0, 1)}
    r = match_instances([image_a()], CATS, NAMES, score_thr=0.9)  # >=: P1 (0.9) still counts
    assert counts(r.per_class[0], IOU_THRESHOLDS) == {(1, 0, 1)}


def test_crowd_region_is_never_a_miss_and_ignores_what_it_holds() -> None:
    crowd = rect(0, 10, 0, 10)
    dt = [rect(0, 2, 0, 2), rect(0, 4, 8, 12)]  # wholly inside; half inside (8 of 16 px)
    img = ImageInstances([crowd], [CELL], [True], dt, [CELL, CELL], [0.9, 0.8])
    c = match_instances([img], [CELL], ["cell"]).per_class[0]
    assert c.at(0.5).fp == 0 and c.at(0.55).fp == 1  # |d & crowd| / |d| = 0.5
    assert {t.fn for t in c.thresholds} == {0} and {t.tp for t in c.thresholds} == {0}
    assert c.images == 1 and c.dsb_score == pytest.approx(0.0)  # FP only above 0.5
    alone = ImageInstances([crowd], [CELL], [True])  # crowd only, nothing predicted
    c = match_instances([alone], [CELL], ["cell"]).per_class[0]
    assert c.images == 0 and math.isnan(c.dsb_score) and math.isnan(c.at(0.5).accuracy)


def test_maximum_matching_not_greedy() -> None:
    """Overlapping true objects on a 1 x 20 strip. g1 = [0, 10), g2 = [3, 13); p1 = [1, 11)
    (score 0.9): IoU 9/11 with g1, 8/12 with g2; p2 = [0, 9) (0.8): 9/10 with g1, 6/13 with g2.
    A greedy pass in score order gives g1 to p1 and leaves p2 alone; the maximum matching pairs
    p1-g2 and p2-g1 while 2/3 >= t."""

    def strip(a: int, b: int) -> dict:
        return rect(0, 1, a, b, h=1, w=20)

    img = ImageInstances(
        [strip(0, 10), strip(3, 13)], [CELL, CELL], [False, False],
        [strip(1, 11), strip(0, 9)], [CELL, CELL], [0.9, 0.8],
    )  # fmt: skip
    c = match_instances([img], [CELL], ["cell"]).per_class[0]
    assert counts(c, LOW) == {(2, 0, 0)}
    assert counts(c, [0.7, 0.75, 0.8, 0.85, 0.9]) == {(1, 1, 1)}  # 9/10 reaches 0.9
    assert counts(c, [0.95]) == {(0, 2, 2)}


def test_near_ties_do_not_flip() -> None:
    """Scores a hair apart (either order) and an IoU equal to a threshold as a fraction."""
    g = rect(0, 5, 0, 5)  # 25 px
    d1, d2 = rect(0, 5, 0, 4), rect(0, 5, 1, 5)  # 20 / 25 = 0.8 each
    results = set()
    for s1, s2 in ((0.5, 0.5 + 1e-12), (0.5 + 1e-12, 0.5), (0.5, 0.5)):
        img = ImageInstances([g], [CELL], [False], [d1, d2], [CELL, CELL], [s1, s2])
        c = match_instances([img], [CELL], ["cell"]).per_class[0]
        results.add(tuple((t.tp, t.fp, t.fn) for t in c.thresholds))
    assert results == {((1, 1, 0),) * 7 + ((0, 2, 1),) * 3}
    # IoU 17/20 = 0.85 exactly: a match at 0.85, not at 0.9, also with thresholds summed in
    # floats (0.5 + 0.05 * 7 = 0.8500000000000001)
    strip = ImageInstances([rect(0, 1, 0, 20)], [CELL], [False], [rect(0, 1, 0, 17)], [CELL], [0.9])
    for thrs in (IOU_THRESHOLDS, [0.5 + 0.05 * i for i in range(10)]):
        c = match_instances([strip], [CELL], ["cell"], iou_thresholds=thrs).per_class[0]
        assert [t.tp for t in c.thresholds] == [1] * 8 + [0] * 2


def test_empty_dataset_and_no_predictions() -> None:
    r = match_instances([image_d(), image_d()], CATS, NAMES)
    assert r.overall.images == 0 and math.isnan(r.overall.dsb_score)
    assert counts(r.overall, IOU_THRESHOLDS) == {(0, 0, 0)}
    r = match_instances([image_c()], [CELL], ["cell"])
    t = r.overall.at(0.5)
    assert (t.tp, t.fp, t.fn, t.recall, t.accuracy, t.f1) == (0, 0, 2, 0, 0, 0)
    assert math.isnan(t.precision) and r.overall.dsb_score == 0


def test_to_dict_and_table() -> None:
    r = match_instances([image_a(), image_b(), image_c()], CATS, NAMES)
    d = json.loads(json.dumps(_json_safe(r.to_dict())))  # strict JSON: NaN -> null
    assert d["iou_thresholds"] == list(IOU_THRESHOLDS) and d["score_thr"] == 0.3
    first = d["all"]["thresholds"][0]
    assert first == {
        "iou": 0.5, "tp": 2, "fp": 3, "fn": 3, "precision": 0.4, "recall": 0.4, "f1": 0.4,
        "accuracy": 0.25,
    }  # fmt: skip
    assert d["per_class"]["ghost"]["thresholds"][0]["recall"] is None
    assert set(d["all"]) == {"thresholds", "mean", "dsb_score", "dsb_score_pooled", "images"}
    table = format_match_table(r.to_dict())
    assert format_match_table(d) == table  # the same table from metrics.json's match object
    lines = table.splitlines()
    head = [c.strip() for c in lines[0].split("|")]
    assert head[1:] == ["precision", "recall", "F1", "accuracy", "TP", "FP", "FN"]
    row50 = [c.strip() for c in lines[2].split("|")]
    assert row50 == ["IoU 0.50", "0.400", "0.400", "0.400", "0.250", "2", "3", "3"]
    assert lines[4].startswith("mean IoU 0.50:0.95")
    assert "averaged over 3 images): 0.087, over the pooled counts: 0.167" in table
    assert [ln.split("|")[0].strip() for ln in lines[-3:]] == NAMES
    assert "ghost" not in format_match_table(r.to_dict(), per_class=False)


def test_match_coco_from_ground_truth_and_results() -> None:
    """The adapter: pycocotools ground truth (polygons and RLE, a crowd) + COCO results."""
    gt = COCO()
    gt.dataset = {
        "images": [{"id": 7, "height": H, "width": W}, {"id": 8, "height": H, "width": W}],
        "categories": [{"id": CELL, "name": "cell"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": CELL, "iscrowd": 0, "area": 20,
             "bbox": [0, 0, 5, 4], "segmentation": [[0, 0, 5, 0, 5, 4, 0, 4]]},
            {"id": 2, "image_id": 7, "category_id": CELL, "iscrowd": 1, "area": 50,
             "bbox": [15, 0, 5, 10], "segmentation": rect(0, 10, 15, 20)},
            {"id": 3, "image_id": 8, "category_id": CELL, "iscrowd": 0, "area": 9,
             "bbox": [0, 0, 3, 3], "segmentation": rect(0, 3, 0, 3)},
        ],
    }  # fmt: skip
    gt.createIndex()
    results = [
        {"image_id": 7, "category_id": CELL, "segmentation": rect(0, 4, 0, 5), "score": 0.9},
        {"image_id": 7, "category_id": CELL, "segmentation": rect(2, 6, 16, 19), "score": 0.8},
        {"image_id": 99, "category_id": CELL, "segmentation": rect(0, 3, 0, 3), "score": 0.9},
    ]
    r = match_coco(gt, results, [7, 8], [CELL], ["cell"])
    # image 7: the polygon found, the crowd prediction ignored; image 8: no results, one miss
    assert counts(r.overall, IOU_THRESHOLDS) == {(1, 0, 1)}
    assert r.overall.dsb_score == pytest.approx(0.5) and r.overall.images == 2
