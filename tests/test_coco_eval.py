"""COCO evaluation with known answers on a tiny in-memory dataset."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from solov2.evaluation.coco_eval import (
    CocoEvaluator,
    format_table,
    masks_to_boxes,
    masks_to_rle,
    write_results,
)
from solov2.structures import Predictions

try:
    import faster_coco_eval  # noqa: F401

    BACKENDS = ["pycocotools", "faster"]
except ImportError:
    BACKENDS = ["pycocotools"]

H, W = 120, 160
CAT_IDS = [3, 7, 12]  # non-contiguous COCO ids of labels 0, 1, 2
NAMES = ["cat", "dog", "bird"]


def _rect(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8)


def _rle(m: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode("ascii")
    return r


def _build_gt() -> tuple[COCO, dict[int, list[tuple[np.ndarray, int]]], dict[int, np.ndarray]]:
    """3 images; small/medium/large objects; a polygon; one crowd region (image 20)."""
    objects = {  # image id -> [(mask, label)]
        10: [(_rect(10, 10, 50, 40), 0), (_ellipse(110, 60, 30, 40), 1)],  # medium, medium
        20: [(_rect(5, 5, 25, 25), 2), (_rect(60, 10, 155, 115), 0)],  # small, large
        30: [(_ellipse(40, 60, 25, 15), 1), (_rect(100, 80, 130, 100), 2)],
    }
    crowd = {20: _rect(30, 60, 55, 110)}  # label 1 (dog) crowd
    anns = []
    for img_id, objs in objects.items():
        for mask, label in objs:
            seg = _rle(mask)
            anns.append(
                {
                    "image_id": img_id,
                    "category_id": CAT_IDS[label],
                    "segmentation": seg,
                    "iscrowd": 0,
                }
            )
    # one polygon annotation (rectangle 70..90 x 20..40 in image 30, label 0)
    anns.append(
        {
            "image_id": 30,
            "category_id": CAT_IDS[0],
            "iscrowd": 0,
            "segmentation": [[70, 20, 90, 20, 90, 40, 70, 40]],
        }
    )
    # crowd as uncompressed RLE, as COCO stores it
    cm = crowd[20]
    flat = np.asfortranarray(cm).flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    anns.append(
        {
            "image_id": 20,
            "category_id": CAT_IDS[1],
            "iscrowd": 1,
            "segmentation": {"size": [H, W], "counts": counts},
        }
    )
    dataset = {
        "images": [{"id": i, "height": H, "width": W, "file_name": f"{i}.jpg"} for i in objects],
        "categories": [{"id": c, "name": n} for c, n in zip(CAT_IDS, NAMES)],
        "annotations": anns,
    }
    for k, a in enumerate(dataset["annotations"], start=1):
        a["id"] = k
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    # areas and boxes of the rasterised masks, so box predictions from masks are exact
    for a in coco.dataset["annotations"]:
        rle = coco.annToRLE(a)
        a["area"] = float(mask_util.area(rle))
        a["bbox"] = mask_util.toBbox(rle).tolist()
    assert np.array_equal(coco.annToMask(coco.loadAnns(anns[-1]["id"])[0]), cm)
    gt = {
        img: [
            (coco.annToMask(a), CAT_IDS.index(a["category_id"]))
            for a in coco.imgToAnns[img]
            if not a["iscrowd"]
        ]
        for img in objects
    }
    return coco, gt, crowd


def _preds(objs: list[tuple[np.ndarray, int]], label_map=None) -> Predictions:
    if not objs:
        return Predictions(
            torch.zeros((0, H, W), dtype=torch.bool),
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0),
            torch.zeros((0, 4)),
        )
    masks = torch.from_numpy(np.stack([m for m, _ in objs])).bool()
    labels = torch.tensor([label_map(lb) if label_map else lb for _, lb in objs])
    scores = torch.linspace(1.0, 0.9, len(objs))
    return Predictions(masks, labels, scores, masks_to_boxes(masks))


@pytest.fixture(scope="module")
def gt():
    return _build_gt()


def _evaluate(coco, per_image: dict, backend: str) -> dict:
    ev = CocoEvaluator(coco, CAT_IDS, NAMES, backend=backend)
    for img, objs in per_image.items():
        ev.process([img], [objs if isinstance(objs, Predictions) else _preds(objs)])
    assert ev.gather()  # single process: no-op
    return ev.evaluate()


@pytest.mark.parametrize("backend", BACKENDS)
def test_perfect_predictions(gt, backend: str) -> None:
    coco, objects, crowd = gt
    per_image = dict(objects)
    # an extra detection exactly on the crowd region is ignored, not a false positive
    per_image[20] = objects[20] + [(crowd[20], 1)]
    m = _evaluate(coco, per_image, backend)
    assert m["backend"] == backend
    for task in ("segm", "bbox"):
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            assert m[task][name] == pytest.approx(100.0), (task, name)
    assert m["per_category"]["segm"] == pytest.approx({n: 100.0 for n in NAMES})
    assert m["num_images"] == 3 and m["num_detections"] == 8


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_class_and_missing_class(gt, backend: str) -> None:
    coco, objects, _ = gt
    shifted = {img: [(mk, (lb + 1) % 3) for mk, lb in objs] for img, objs in objects.items()}
    m = _evaluate(coco, shifted, backend)
    assert m["segm"]["AP"] == 0.0 and m["bbox"]["AP"] == 0.0
    # drop every "bird": that category scores 0, the other two 100 -> mean 66.67
    no_bird = {img: [(mk, lb) for mk, lb in objs if lb != 2] for img, objs in objects.items()}
    m = _evaluate(coco, no_bird, backend)
    assert m["per_category"]["segm"] == pytest.approx({"cat": 100.0, "dog": 100.0, "bird": 0.0})
    assert m["segm"]["AP"] == pytest.approx(200 / 3)
    assert m["bbox"]["AP"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shifted_prediction_known_ap(gt, backend: str) -> None:
    coco, objects, _ = gt
    # image 10 only: the 40x30 rectangle shifted right by 5 px -> IoU 35/45 = 0.778, a match at
    # IoU thresholds 0.50..0.75 (6 of 10) -> AP 60 for "cat"; the ellipse is exact (dog: 100)
    (rect, lb0), (ell, lb1) = objects[10]
    moved = np.roll(rect, 5, axis=1)
    m = _evaluate(coco, {10: [(moved, lb0), (ell, lb1)]}, backend)
    assert m["num_images"] == 1
    for task in ("segm", "bbox"):
        assert m["per_category"][task]["cat"] == pytest.approx(60.0)
        assert m["per_category"][task]["dog"] == pytest.approx(100.0)
        assert math.isnan(m["per_category"][task]["bird"])  # no bird in image 10
        assert m[task]["AP"] == pytest.approx(80.0)
        assert m[task]["AP50"] == pytest.approx(100.0) and m[task]["AP75"] == pytest.approx(100.0)
        assert math.isnan(m[task]["APs"])  # no small object in image 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions(gt, backend: str) -> None:
    coco, objects, _ = gt
    m = _evaluate(coco, {img: [] for img in objects}, backend)
    assert m["segm"]["AP"] == 0.0 and m["bbox"]["AP50"] == 0.0
    assert m["per_category"]["segm"] == {n: 0.0 for n in NAMES}
    m = CocoEvaluator(coco, CAT_IDS, NAMES, backend=backend).evaluate()  # nothing processed
    assert m["segm"]["AP"] == 0.0
    assert "segm" in format_table(m)


def test_backends_agree_and_gt_untouched(gt) -> None:
    if len(BACKENDS) < 2:
        pytest.skip("faster-coco-eval not installed")
    coco, objects, _ = gt
    noisy = {
        img: [(np.roll(mk, k, axis=0), lb) for k, (mk, lb) in enumerate(objs)]
        for img, objs in objects.items()
    }
    a = _evaluate(coco, noisy, "faster")
    b = _evaluate(coco, noisy, "pycocotools")
    for task in ("segm", "bbox"):
        assert a[task] == pytest.approx(b[task], nan_ok=True)
        assert a["per_category"][task] == pytest.approx(b["per_category"][task], nan_ok=True)
    assert a["segm"]["AP"] < 100.0


def test_masks_to_rle_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 37, 53, generator=g) > 0.6
    masks[2] = False  # empty mask
    rles = masks_to_rle(masks)
    assert len(rles) == 4 and all(isinstance(r["counts"], str) for r in rles)
    json.dumps(rles)
    dec = mask_util.decode(rles)  # [H, W, K]
    assert np.array_equal(dec.transpose(2, 0, 1), masks.numpy().astype(np.uint8))
    assert masks_to_rle(torch.zeros((0, 5, 5), dtype=torch.bool)) == []


def test_masks_to_boxes_matches_coco_and_handles_empty() -> None:
    m = torch.zeros(3, 20, 30, dtype=torch.bool)
    m[0, 2:5, 7:11] = True
    m[1, 19, 29] = True
    boxes = masks_to_boxes(m)
    assert boxes.tolist() == [[7, 2, 11, 5], [29, 19, 30, 20], [0, 0, 0, 0]]
    xywh = mask_util.toBbox(masks_to_rle(m))
    assert np.allclose(xywh[:, :2], boxes[:, :2].numpy())
    assert np.allclose(xywh[:, 2:], (boxes[:, 2:] - boxes[:, :2]).numpy())


def test_results_table_and_files(gt, tmp_path: Path) -> None:
    coco, objects, _ = gt
    ev = CocoEvaluator(coco, CAT_IDS, NAMES, backend="pycocotools")
    ev.process([10], [_preds(objects[10])])
    res = ev.results()
    assert {r["category_id"] for r in res} == {3, 7}
    assert all(set(r) == {"image_id", "category_id", "segmentation", "bbox", "score"} for r in res)
    assert res[0]["bbox"] == [10.0, 10.0, 40.0, 30.0]
    m = ev.evaluate()
    table = format_table(m)
    assert "AP50" in table and "bird" in table and "100.000" in table
    write_results(tmp_path, res, m)
    assert json.loads((tmp_path / "coco_instances_results.json").read_text()) == res
    saved = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN -> null
    assert saved["segm"]["AP"] == pytest.approx(100.0) and saved["segm"]["APs"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coco_instances_results.json",
        "metrics.json",
    ]


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    coco, objects, _ = _build_gt()
    ev = CocoEvaluator(coco, CAT_IDS, NAMES, backend="pycocotools")
    # rank 0: images 10, 20; rank 1: 30 and a padded duplicate of 10 (DistributedSampler)
    imgs = [10, 20] if rank == 0 else [30, 10]
    for img in imgs:
        ev.process([img], [_preds(objects[img])])
    is_main = ev.gather()
    if is_main:
        m = ev.evaluate()
        Path(out).write_text(
            json.dumps({"AP": m["segm"]["AP"], "n": m["num_detections"], "imgs": ev.image_ids})
        )
    else:
        assert ev.results() == []
    dist.destroy_process_group()


def test_gather_two_processes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out.json"
    torch.multiprocessing.spawn(_gather_worker, args=(2, port, str(out)), nprocs=2)
    got = json.loads(out.read_text())
    assert got == {"AP": pytest.approx(100.0), "n": 7, "imgs": [10, 20, 30]}


def _dense_gt(n: int) -> COCO:
    """One 120x160 image holding ``n`` disjoint 4x4 squares of label 0."""
    anns = []
    for k in range(n):
        y, x = divmod(k, 30)
        seg = _rle(_rect(x * 5, y * 5, x * 5 + 4, y * 5 + 4))
        anns.append(
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": CAT_IDS[0],
                "iscrowd": 0,
                "segmentation": seg,
                "area": 16.0,
                "bbox": [x * 5, y * 5, 4, 4],
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "height": H, "width": W, "file_name": "1.jpg"}],
        "categories": [{"id": c, "name": nm} for c, nm in zip(CAT_IDS, NAMES)],
        "annotations": anns,
    }
    coco.createIndex()
    return coco


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_dets_caps_dense_images(backend: str) -> None:
    """150 objects in one image, all predicted exactly: COCO's 100 detections can recall at most
    100 of them (AP ~ 100/150 of the PR area), a cap of 150 scores 100."""
    coco = _dense_gt(150)
    objs = [(coco.annToMask(a), 0) for a in coco.loadAnns(coco.getAnnIds())]
    out = {}
    for cap in (100, 150):
        ev = CocoEvaluator(coco, CAT_IDS, NAMES, backend=backend, max_dets=cap)
        ev.process([1], [_preds(objs)])
        out[cap] = ev.evaluate()
        assert out[cap]["max_dets"] == cap
        assert f"max {cap} dets" in format_table(out[cap])
    assert out[150]["segm"]["AP"] == pytest.approx(100.0)
    # recall stops at 100/150: 67 of the 101 recall points reach precision 1, the rest 0
    assert out[100]["segm"]["AP"] == pytest.approx(100.0 * 67 / 101, abs=0.01)


@pytest.mark.parametrize("backend", BACKENDS)
def test_summary_matches_cocoeval_summarize_at_100(gt, backend: str) -> None:
    """Our AP-at-cap summary equals COCOeval.summarize()'s stats at the default 100."""
    coco, objects, _ = gt
    noisy = {img: [(np.roll(m, 2, axis=1), lb) for m, lb in objs] for img, objs in objects.items()}
    ev = CocoEvaluator(coco, CAT_IDS, NAMES, backend=backend)
    for img, objs in noisy.items():
        ev.process([img], [_preds(objs)])
    m = ev.evaluate()
    dts = [{k: v for k, v in r.items() if k != "bbox"} for r in ev.results()]
    stats = ev._run("segm", dts, ev.image_ids).stats
    for i, name in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        want = stats[i] * 100 if stats[i] >= 0 else float("nan")
        assert m["segm"][name] == pytest.approx(want, abs=1e-9, nan_ok=True), name
