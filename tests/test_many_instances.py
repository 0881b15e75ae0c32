"""More than 255 and more than 1000 instances per image, on every path.

A synthetic COCO dataset of 256x256 images holding 1200 non-overlapping 4x4 squares (RLE), 300
6x6 squares (polygons) and 20 20x20 squares, in two alternating classes. Known answers: the
squares themselves (areas, boxes, counts), the dense pipeline for the compact one, and the
ground truth fed back as predictions (COCO AP 100 when every instance counts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from solov2.data.coco import CocoInstances
from solov2.data.compact import CompactTrainTransform
from solov2.data.loader import collate
from solov2.data.rle import rle_area, rle_iou
from solov2.data.show import draw_ground_truth
from solov2.data.stats import dataset_stats
from solov2.data.transforms import build_transforms
from solov2.evaluation.coco_eval import CocoEvaluator, _faster_available, masks_to_rle
from solov2.evaluation.match import match_coco
from solov2.model import build_model
from solov2.postprocess import PostprocessCfg, PostProcessor
from solov2.presets import get_config
from solov2.structures import Predictions, Sample
from solov2.targets import GridGeometry, assign_cells, build_targets
from solov2.train.step import train_step

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SIZE = 256
# (instances, side, pitch, segmentation kind) per image; image ids 1, 2, 3
IMAGES = [(1200, 4, 6, "rle"), (300, 6, 14, "poly"), (20, 20, 40, "rle")]
TOTAL = sum(n for n, *_ in IMAGES)


def squares(n: int, side: int, pitch: int) -> list[tuple[int, int]]:
    """Top-left ``(x, y)`` of ``n`` squares, row by row, ``pitch`` px apart."""
    per_row = SIZE // pitch
    out = [((k % per_row) * pitch + 1, (k // per_row) * pitch + 1) for k in range(n)]
    assert out[-1][1] + side <= SIZE
    return out


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("many")
    (root / "img").mkdir()
    images, anns = [], []
    for iid, (n, side, pitch, kind) in enumerate(IMAGES, 1):
        img = np.full((SIZE, SIZE, 3), 20, np.uint8)
        for k, (x, y) in enumerate(squares(n, side, pitch)):
            img[y : y + side, x : x + side] = (200, 120 + 60 * (k % 2), 40)
            if kind == "rle":
                m = np.zeros((SIZE, SIZE), np.uint8, order="F")
                m[y : y + side, x : x + side] = 1
                counts = mask_utils.encode(m)["counts"].decode()
                seg: object = {"size": [SIZE, SIZE], "counts": counts}
            else:
                seg = [[x, y, x + side, y, x + side, y + side, x, y + side]]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": iid,
                    "category_id": 1 + k % 2,
                    "segmentation": seg,
                    "iscrowd": 0,
                    "area": side * side,
                    "bbox": [x, y, side, side],
                }
            )
        Image.fromarray(img).save(root / "img" / f"{iid}.png")
        images.append({"id": iid, "file_name": f"{iid}.png", "height": SIZE, "width": SIZE})
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    js = root / "instances.json"
    js.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return js, root / "img"


@pytest.fixture(scope="module")
def gt(dense: tuple[Path, Path]) -> tuple[CocoInstances, list[Sample]]:
    """The evaluation view of the dataset and its decoded items (decoded once: 1200 frames)."""
    ds = CocoInstances(*dense, train=False)
    return ds, [ds[i] for i in range(len(ds))]


def test_pycocotools_list_calls_take_1200_masks() -> None:
    """``rle_area`` (pycocotools' list ``area`` overflows a uint8 above 255) and the list calls
    used as they are (encode, decode, toBbox, merge, frPyObjects, iou) on 1200 masks."""
    xy = squares(1200, 4, 6)
    stack = np.zeros((SIZE, SIZE, len(xy)), np.uint8, order="F")
    for k, (x, y) in enumerate(xy):
        stack[y : y + 4, x : x + 4, k] = 1
    rles = mask_utils.encode(stack)
    assert len(rles) == 1200
    assert rle_area(rles).tolist() == [16] * 1200 and rle_area([]).shape == (0,)
    assert np.array_equal(mask_utils.decode(rles), stack)
    assert mask_utils.toBbox(rles).tolist() == [[x, y, 4, 4] for x, y in xy]
    assert int(mask_utils.area(mask_utils.merge(rles))) == 1200 * 16
    polys = [[x, y, x + 4, y, x + 4, y + 4, x, y + 4] for x, y in xy]
    assert rle_area(mask_utils.frPyObjects(polys, SIZE, SIZE)).tolist() == [16] * 1200
    iou = rle_iou(rles, rles, [False] * 1200)
    assert iou.shape == (1200, 1200) and np.array_equal(iou, np.eye(1200))
    assert rle_iou(rles, [], []).shape == (1200, 0) and rle_iou([], rles, [0] * 1200).shape == (
        0,
        1200,
    )


def test_annotation_rles_and_loading_dense_and_compact(dense: tuple[Path, Path]) -> None:
    js, img = dense
    ds = CocoInstances(js, img, train=False)
    for i, (n, side, _, _) in enumerate(IMAGES):
        rles, labels, hw = ds.annotation_rles(i)
        assert hw == (SIZE, SIZE) and len(rles) == n
        assert rle_area(rles).tolist() == [side * side] * n
        assert labels.tolist() == [k % 2 for k in range(n)]
    scales = [[240, 192]]  # 256 -> 192: the 4x4 squares become 3x3, none vanishes
    dense_ds = CocoInstances(js, img, build_transforms(True, scales, 0.0), train=True)
    compact_ds = CocoInstances(js, img, CompactTrainTransform(scales, 0.0), train=True)
    s = dense_ds[0]
    assert len(s.instances) == 1200 and s.instances.masks.shape == (1200, 192, 192)
    assert s.instances.masks.flatten(1).sum(1).tolist() == [9] * 1200
    bd = collate([dense_ds[0], dense_ds[1]])
    bc = collate([compact_ds[0], compact_ds[1]]).to("cpu")
    for a, b in zip(bd.targets, bc.targets):
        assert torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.boxes, b.boxes)
    assert [len(t) for t in bc.targets] == [1200, 300]


def test_targets_index_every_instance(dense: tuple[Path, Path]) -> None:
    """Instance indices above 255 and 1000 survive the assignment: every one of the 1500
    instances of the batch gets positives, and the category map's owners reach index 1499."""
    js, img = dense
    cfg = get_config("solov2_demo")
    ds = CocoInstances(js, img, CompactTrainTransform([[240, 192]], 0.0), train=True)
    batch = collate([ds[0], ds[1]]).to("cpu")
    h = cfg.model.head
    hp, wp = batch.images.shape[-2:]
    t = build_targets(batch.targets, (hp // 4, wp // 4), h.num_grids, h.scale_ranges, 2, h.sigma)
    assert t.mask_targets.shape[0] == 1500
    assert torch.unique(t.pos_inst).tolist() == list(range(1500))
    assert t.pos_inst.dtype == torch.int64 and t.cate_labels.dtype == torch.int64
    labels = torch.cat([x.labels for x in batch.targets])
    boxes = torch.cat([x.boxes for x in batch.targets])
    cx, cy = (boxes[:, 0] + boxes[:, 2] - 1) / 2, (boxes[:, 1] + boxes[:, 3] - 1) / 2
    img_idx = torch.tensor([0] * 1200 + [1] * 300)
    geometry = GridGeometry((hp, wp), h.num_grids, h.scale_ranges, h.sigma)
    a = assign_cells(boxes, cx, cy, torch.ones(1500, dtype=torch.bool), img_idx, 2, geometry)
    won = a.winner[a.winner >= 0]
    assert int(won.max()) == 1499 and int(won[won < 1200].max()) > 1000
    claimed = a.winner.view(2, -1) >= 0
    expect = torch.where(claimed, labels[a.winner.view(2, -1).clamp(min=0)], 2)
    assert torch.equal(t.cate_labels, expect)


def test_dataset_stats(dense: tuple[Path, Path]) -> None:
    js, img = dense
    cfg = get_config("solov2_demo")
    st = dataset_stats(CocoInstances(js, img, train=True), cfg)
    assert st.instances == TOTAL and st.instances_per_image == [1200, 300, 20]
    assert st.per_image["max"] == 1200 and st.instances_per_class == [760, 760]
    assert st.images_over_max == 2 and st.instances_over_max == 1100 + 200
    assert any("up to 1200 instances" in w for w in st.warnings)
    cfg.model.test.max_per_img = 1500
    st = dataset_stats(CocoInstances(js, img, train=True), cfg)
    assert st.images_over_max == 0 and not any("max_per_img" in w for w in st.warnings)


def test_forward_and_loss_on_1500_instances(dense: tuple[Path, Path]) -> None:
    js, img = dense
    cfg = get_config("solov2_demo")
    cfg.model.num_classes = 2
    ds = CocoInstances(js, img, CompactTrainTransform(cfg.data.train_scales, 0.0), train=True)
    batch = collate([ds[0], ds[1]]).to("cpu")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    losses = train_step(model, batch, cfg, "none")
    total = sum(losses.values())
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert float(total.detach()) > 0
    total.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_postprocess_keeps_more_than_1000() -> None:
    """1296 disjoint candidates (one per cell of a 36x36 grid, each mask confined to its own
    feature pixel by a cell window) and max_per_img 1100: the 1100 best come out, in order."""
    s, hf = 36, 36  # a cell is one stride-4 feature pixel: padded input 144 x 144
    idx = torch.arange(s * s, dtype=torch.float32).view(1, 1, s, s)
    score = 0.5 + 0.4 * idx / (s * s)  # rising in raster order: every cell is its 2x2 maximum
    cate = [torch.log(score / (1 - score))]
    kernels = [torch.full((1, 1, s, s), 5.0)]
    feats = torch.ones(1, 1, hf, hf)
    cfg = PostprocessCfg(score_thr=0.1, nms_pre=2000, max_per_img=1100)
    sizes = torch.tensor([[144, 144]])
    (pred,) = PostProcessor(cfg, [s], [0], window=[1.9]).run(cate, kernels, feats, sizes, sizes)
    assert len(pred) == 1100 and pred.labels.dtype == torch.int64
    maskness = torch.sigmoid(torch.tensor(5.0))
    expect = (score.flatten().flip(0)[:1100] * maskness).float()
    torch.testing.assert_close(pred.scores, expect)
    assert int(pred.masks.sum(0).max()) == 1 and bool(pred.masks.flatten(1).any(1).all())
    cells = s * s - 1 - torch.arange(1100)  # the best cells, best first
    cy, cx = (pred.boxes[:, 1] + pred.boxes[:, 3]) / 2, (pred.boxes[:, 0] + pred.boxes[:, 2]) / 2
    assert torch.equal((cy // 4).long() * s + (cx // 4).long(), cells)
    rles = masks_to_rle(pred.masks)
    assert rle_area(rles).tolist() == pred.masks.flatten(1).sum(1).tolist()


def _gt_as_predictions(s: Sample) -> Predictions:
    n = len(s.instances)
    return Predictions(
        s.instances.masks.bool(), s.instances.labels, torch.linspace(1, 0.5, n), s.instances.boxes
    )


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_coco_eval_of_ground_truth_as_predictions(gt: tuple, backend: str) -> None:
    """AP 100 when maxDets covers every instance; at COCO's 100 the 1200-instance image scores
    far less. pycocotools' pure-Python matching is slow with 1200 detections: it scores the
    300-instance image only."""
    if backend == "faster" and not _faster_available():
        pytest.skip("faster-coco-eval not installed")
    ds, samples = gt
    indices = [0, 1, 2] if backend == "faster" else [1]
    for cap in (1500, 100):
        ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names, backend=backend, max_dets=cap)
        for i in indices:
            ev.process([ds.image_ids[i]], [_gt_as_predictions(samples[i])])
        m = ev.evaluate()
        assert m["num_detections"] == sum(IMAGES[i][0] for i in indices)
        # maxDets caps each (image, class): the best `cap` of each class's n / 2 are all
        # right, so precision is 1 up to recall r and AP = the share of COCO's 101 recall
        # points <= r (AP 100 when nothing is cut)
        per_class = [IMAGES[i][0] // 2 for i in indices]
        r = sum(min(n, cap) for n in per_class) / sum(per_class)
        ap = 100.0 * (math.floor(r * 100 + 1e-9) + 1) / 101 if r < 1 else 100.0
        assert m["segm"]["AP"] == pytest.approx(ap) and m["bbox"]["AP"] == pytest.approx(ap)


def test_drawing_1200_instances(gt: tuple) -> None:
    ds, samples = gt
    s = samples[0]
    xy = squares(1200, 4, 6)
    for out in (
        draw_ground_truth(s.image, s.instances, ds.class_names),
        draw_ground_truth(s.image, s.instances, ["one class"]),  # a colour per instance
    ):
        assert out.shape == s.image.shape
        inner = torch.stack([out[:, y + 2, x + 2] for x, y in xy])
        orig = torch.stack([s.image[:, y + 2, x + 2] for x, y in xy])
        assert bool((inner != orig).any(1).all())  # every square painted


def test_matching_metrics_of_ground_truth_as_predictions(gt: tuple) -> None:
    """Every instance matched at every IoU threshold (1200 x 600 IoU matrices per class), and
    with the 1200-instance image's predictions shifted by one column a 4x4 square keeps
    12 / 20 = 0.6 IoU: matched up to 0.6 only."""
    ds, samples = gt
    ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names, max_dets=1500)
    for i in range(len(ds)):
        ev.process([ds.image_ids[i]], [_gt_as_predictions(samples[i])])
    r = match_coco(ds.coco, ev.results(), ds.image_ids, ds.cat_ids, ds.class_names)
    assert {(t.tp, t.fp, t.fn) for t in r.overall.thresholds} == {(TOTAL, 0, 0)}
    assert r.overall.dsb_score == 1.0 and r.per_class[0].at(0.95).tp == TOTAL // 2
    shifted = _gt_as_predictions(samples[0])
    shifted.masks = shifted.masks.roll(1, dims=2)
    ev.reset()
    ev.process([ds.image_ids[0]], [shifted])
    r = match_coco(ds.coco, ev.results(), ds.image_ids[:1], ds.cat_ids, ds.class_names)
    assert [t.tp for t in r.overall.thresholds] == [1200] * 3 + [0] * 7
