"""Sliced (tiled) inference: tile layout, the border merge on a scene with known answers, RLE
from crops, lazy tile reading, overlays, and one run of a real tiny model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image
from test_predictor import confident_model

from solov2.checkpoint import save_checkpoint
from solov2.config import config_to_dict
from solov2.data.draw import draw_predictions
from solov2.data.io import ImageReadError, read_image
from solov2.infer import Predictor
from solov2.infer.large import crop_rle
from solov2.infer.tile_merge import TiledPredictions, window_iou
from solov2.infer.tiling import (
    ImageTiles,
    draw_tiled,
    native_tile_size,
    predict_tiled,
    tile_boxes,
    tiled_results,
)
from solov2.presets import get_config
from solov2.structures import Predictions

# ---------------------------------------------------------------------------------------- layout


def test_tile_layout_counts_and_shifted_last_tile() -> None:
    # 100 px tiles, 20 px overlap: steps of 80; 250 = 0, 80, then the last shifted to 150..250
    assert tile_boxes(100, 250, 100, 0.2) == [
        (0, 0, 100, 100),
        (80, 0, 180, 100),
        (150, 0, 250, 100),
    ]
    boxes = tile_boxes(260, 180, 100, 0.2)  # rows 0, 80, 160; columns 0, 80
    assert [b[:2] for b in boxes] == [(0, 0), (80, 0), (0, 80), (80, 80), (0, 160), (80, 160)]
    assert all(b[2] - b[0] == 100 and b[3] - b[1] == 100 for b in boxes)
    # an exact fit has no shifted tile; no overlap = a plain grid
    assert [b[0] for b in tile_boxes(100, 260, 100, 0.2)] == [0, 80, 160]
    assert [b[0] for b in tile_boxes(100, 300, 100, 0.0)] == [0, 100, 200]
    # every pixel is covered, every tile inside the image
    for h, w, t, f in [(517, 333, 128, 0.25), (1000, 1000, 192, 0.2), (129, 640, 128, 0.5)]:
        cover = np.zeros((h, w), bool)
        for x1, y1, x2, y2 in tile_boxes(h, w, t, f):
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1, y2 - y1) == (t, t)
            cover[y1:y2, x1:x2] = True
        assert cover.all()


def test_small_image_is_one_tile() -> None:
    assert tile_boxes(90, 70, 100, 0.2) == [(0, 0, 70, 90)]
    assert tile_boxes(100, 100, 100, 0.2) == [(0, 0, 100, 100)]
    # shorter than a tile on one side only: tiles of the image's height
    assert tile_boxes(60, 250, 100, 0.2) == [(0, 0, 100, 60), (80, 0, 180, 60), (150, 0, 250, 60)]
    for bad in [(0, 10, 5, 0.2), (10, 10, 0, 0.2), (10, 10, 5, 1.0), (10, 10, 5, -0.1)]:
        with pytest.raises(ValueError):
            tile_boxes(*bad)


def test_native_tile_size() -> None:
    assert native_tile_size(get_config("solov2_demo")) == 192
    assert native_tile_size(get_config("solov2_r50_fpn_1x")) == 800


# --------------------------------------------------------------------- merge, with known answers


def _coords_image(h: int, w: int) -> torch.Tensor:
    """Pixels that say where they are: a tile's first pixel gives its offset."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x % 256, y % 256, x // 256 + 16 * (y // 256)]).astype(np.uint8)
    return torch.from_numpy(img)


class SceneModel:
    """A predictor that sees a known scene: each tile's instances are exactly the visible parts
    of the scene's objects (``(mask, label, score)`` at the image's size)."""

    def __init__(self, objects: Sequence[tuple[np.ndarray, int, float]], batch_size: int = 3):
        self.objects = objects
        self.batch_size = batch_size
        self.tiles: list[tuple[int, int, int, int]] = []

    def predict_tensors(self, images: Sequence[torch.Tensor], score_thr: float | None = None):
        out = []
        for img in images:
            x0 = int(img[0, 0, 0]) + 256 * (int(img[2, 0, 0]) % 16)
            y0 = int(img[1, 0, 0]) + 256 * (int(img[2, 0, 0]) // 16)
            h, w = img.shape[-2:]
            self.tiles.append((x0, y0, x0 + w, y0 + h))
            parts = [(m[y0 : y0 + h, x0 : x0 + w], lb, s) for m, lb, s in self.objects]
            parts = [p for p in parts if p[0].any()]
            masks = torch.from_numpy(
                np.stack([p[0] for p in parts]) if parts else np.zeros((0, h, w), bool)
            )
            out.append(
                Predictions(
                    masks,
                    torch.tensor([p[1] for p in parts], dtype=torch.int64),
                    torch.tensor([p[2] for p in parts], dtype=torch.float32),
                    torch.zeros((len(parts), 4)),
                )
            )
        return out


def _rect(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


def _disc(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return (x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r


def _run(objects, h: int, w: int, tile: int = 100, overlap: float = 0.2) -> TiledPredictions:
    model = SceneModel(objects)
    pred = predict_tiled(model, _coords_image(h, w), tile, overlap)  # type: ignore[arg-type]
    assert sorted(model.tiles) == sorted(tile_boxes(h, w, tile, overlap))
    return pred


def _dense(pred: TiledPredictions) -> list[np.ndarray]:
    return [m.numpy() for m in pred.to_predictions().masks]


def test_object_split_by_a_vertical_border_is_one_instance_equal_to_the_union() -> None:
    # tiles x 0..100 and 80..180; the object spans 50..140: cut in both views
    h, w = 100, 180
    obj = _disc(h, w, 95, 50, 45)
    pred = _run([(obj, 0, 0.9)], h, w)
    assert len(pred) == 1
    assert np.array_equal(_dense(pred)[0], obj)
    assert pred.boxes[0].tolist() == [50.0, 5.0, 140.0, 95.0]


def test_object_cut_into_four_at_a_tile_corner_is_one() -> None:
    # 2x2 tiles of 100 at 0 and 80: the disc at (90, 90), radius 45, is cut in all four
    obj = _disc(180, 180, 90, 90, 45)
    pred = _run([(obj, 2, 0.8)], 180, 180)
    assert len(pred) == 1 and pred.labels.tolist() == [2]
    assert np.array_equal(_dense(pred)[0], obj)


def test_touching_objects_across_a_border_stay_two() -> None:
    h, w = 100, 180
    left, right = _rect(h, w, 60, 30, 90, 70), _rect(h, w, 90, 30, 130, 70)
    # two triangles splitting one square crossing the overlap: identical boxes, disjoint masks
    y, x = np.mgrid[0:h, 0:w]
    square = _rect(h, w, 55, 75, 125, 100)
    upper = square & (x - 55 > (y - 75) * 70 / 25)
    lower = square & ~upper
    pred = _run([(left, 1, 0.9), (right, 1, 0.8), (upper, 1, 0.7), (lower, 1, 0.6)], h, w)
    assert len(pred) == 4
    got = {tuple(np.flatnonzero(m.ravel())[:3]): m for m in _dense(pred)}
    for obj in (left, right, upper, lower):
        assert np.array_equal(got[tuple(np.flatnonzero(obj.ravel())[:3])], obj)


def test_object_inside_the_overlap_appears_once() -> None:
    h, w = 100, 180
    obj = _rect(h, w, 83, 10, 97, 40)  # inside x 80..100, seen whole by both tiles
    pred = _run([(obj, 0, 0.9)], h, w)
    assert len(pred) == 1 and np.array_equal(_dense(pred)[0], obj)
    assert pred.scores.tolist() == pytest.approx([0.9])


def test_different_classes_are_never_merged() -> None:
    h, w = 100, 180
    obj = _disc(h, w, 95, 50, 30)
    pred = _run([(obj, 0, 0.9), (obj, 3, 0.5)], h, w)
    assert sorted(pred.labels.tolist()) == [0, 3]
    assert all(np.array_equal(m, obj) for m in _dense(pred))


def test_one_view_per_tile_a_duplicate_stays_as_matrix_nms_left_it() -> None:
    """Both tiles predict X twice (Matrix NMS decayed the copy to 0.3): the best views of the
    two tiles are one object and the copies another, as per-image inference keeps them (a
    transitive union of all matches would glue the four into one); a low-score blob covering X
    and its neighbour Y (same class) joins neither."""
    h, w = 100, 180
    x, y = _rect(h, w, 84, 10, 96, 40), _rect(h, w, 84, 50, 96, 80)
    blob = _rect(h, w, 81, 10, 99, 80)  # window IoU with x or y alone < 0.5
    pred = _run([(x, 0, 0.9), (x, 0, 0.3), (y, 0, 0.8), (blob, 0, 0.1)], h, w)
    assert pred.scores.tolist() == pytest.approx([0.9, 0.8, 0.3, 0.1])
    dense = _dense(pred)
    assert np.array_equal(dense[0], x) and np.array_equal(dense[1], y)
    assert np.array_equal(dense[2], x) and np.array_equal(dense[3], blob)


class _CutScores(SceneModel):
    """Scores that fall with the visible fraction of the object."""

    def predict_tensors(self, images, score_thr=None):
        preds = super().predict_tensors(images, score_thr)
        for p in preds:
            full = {lb: m.sum() for m, lb, _ in self.objects}
            vis = p.masks.sum((1, 2)).numpy()
            p.scores = torch.tensor([0.9 * v / full[int(lb)] for v, lb in zip(vis, p.labels)])
        return preds


def test_merged_score_is_the_complete_view_else_area_weighted() -> None:
    h, w = 100, 180
    whole_in_b = _rect(h, w, 90, 10, 130, 20)  # 400 px; tile A sees 10 of 40 columns (cut)
    spanning = _rect(h, w, 40, 40, 150, 50)  # 1100 px, cut in both: A sees 600, B sees 700
    objs = [(whole_in_b, 0, 0.0), (spanning, 1, 0.0)]
    model = _CutScores(objs)
    pred = predict_tiled(model, _coords_image(h, w), 100, 0.2)  # type: ignore[arg-type]
    by_label = dict(zip(pred.labels.tolist(), pred.scores.tolist()))
    assert by_label[0] == pytest.approx(0.9)  # the complete view's score
    a, b = 0.9 * 600 / 1100, 0.9 * 700 / 1100
    assert by_label[1] == pytest.approx((a * 600 + b * 700) / 1300)
    assert np.array_equal(_dense(pred)[list(pred.labels).index(1)], spanning)


def test_window_iou_known_values() -> None:
    a = np.ones((10, 10), bool)  # box (0, 0, 10, 10)
    b = np.ones((10, 10), bool)
    assert window_iou(a, (0, 0, 10, 10), b, (5, 0, 15, 10), (5, 0, 10, 10)) == 1.0
    # b covers half of the window's columns: 50 / 100 within the window
    assert window_iou(a, (0, 0, 10, 10), b[:, :5], (5, 0, 10, 10), (0, 0, 10, 10)) == 0.5
    assert window_iou(a, (0, 0, 10, 10), b, (20, 0, 30, 10), (0, 0, 30, 10)) == 0.0


def test_empty_and_score_filter() -> None:
    pred = _run([], 100, 180)
    assert len(pred) == 0 and pred.to_rles() == [] and pred.boxes.shape == (0, 4)
    obj = _rect(100, 180, 10, 10, 30, 30)
    two = _run([(obj, 0, 0.9), (_rect(100, 180, 140, 10, 170, 30), 1, 0.2)], 100, 180)
    assert two.scores.tolist() == pytest.approx([0.9, 0.2])
    assert two.above(0.5).labels.tolist() == [0]


# --------------------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("seed", range(4))
def test_rle_from_crops_equals_pycocotools_dense(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        H, W = (int(v) for v in rng.integers(1, 20, 2))  # noqa: N806
        h, w = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        crop = rng.random((h, w)) < rng.choice([0.0, 0.3, 0.8, 1.0])
        full = np.zeros((H, W), np.uint8)
        full[y : y + h, x : x + w] = crop
        ref = mask_util.encode(np.asfortranarray(full))
        assert crop_rle(crop, (x, y), (H, W)) == {"size": [H, W], "counts": ref["counts"].decode()}
    with pytest.raises(ValueError, match="outside"):
        crop_rle(np.ones((3, 3), bool), (8, 0), (10, 10))


def test_to_rles_and_results_decode_to_the_masks() -> None:
    h, w = 100, 180
    objs = [(_disc(h, w, 95, 50, 45), 0, 0.9), (_rect(h, w, 150, 0, 180, 100), 1, 0.7)]
    pred = _run(objs, h, w)
    dense = _dense(pred)
    for rle, m in zip(pred.to_rles(), dense):
        assert np.array_equal(mask_util.decode({**rle, "counts": rle["counts"].encode()}), m)
    res = tiled_results(pred, [1, 3], ["a", "b"], {"image_id": 7})
    assert [r["category_id"] for r in res] == [1, 3] and res[1]["bbox"] == [150.0, 0.0, 30.0, 100.0]
    assert all(r["image_id"] == 7 for r in res)


# ----------------------------------------------------------------------- reading and drawing


def test_tiles_read_from_a_file_equal_the_decoded_image(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 90 x 70
    Image.fromarray(arr).save(tmp_path / "r.png", exif=exif)
    Image.fromarray(arr[..., 0]).save(tmp_path / "g.png")
    for name in ("r.png", "g.png"):
        full = read_image(tmp_path / name)
        src = ImageTiles(tmp_path / name)
        assert src.size == tuple(full.shape[-2:])
        for box in tile_boxes(*src.size, 32, 0.25):
            x1, y1, x2, y2 = box
            assert torch.equal(src.read(box), full[:, y1:y2, x1:x2])


def test_unreadable_file_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "cut.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    with pytest.raises(ImageReadError, match="cut.jpg") as e:
        ImageTiles(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ImageReadError, match="not found"):
        ImageTiles(tmp_path / "missing.png")


def test_draw_tiled_equals_draw_predictions_at_full_size_and_shrinks() -> None:
    h, w = 100, 180
    objs = [(_disc(h, w, 95, 50, 45), 0, 0.9), (_rect(h, w, 150, 5, 175, 95), 1, 0.7)]
    pred = _run(objs, h, w)
    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, h, w), dtype=np.uint8))
    names = ["a", "b"]
    assert torch.equal(
        draw_tiled(img, pred, names), draw_predictions(img, pred.to_predictions(), names)
    )
    small = img[:, ::4, ::4].contiguous()
    vis = draw_tiled(small, pred, names, boxes=False)
    assert vis.shape == small.shape and not torch.equal(vis, small)
    assert torch.equal(vis[:, 0, 0], small[:, 0, 0])  # outside every mask: unchanged


# ------------------------------------------------------------------------ a real tiny model


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """The random ``solov2_demo`` model of test_predictor.py at a 96x64 test scale, scaled so
    that instances pass the thresholds with masks far from 0.5."""
    cfg = get_config("solov2_demo")
    cfg.data.test_scale = [96, 64]
    model = confident_model(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg)})
    return Predictor.from_checkpoint(path, device="cpu", score_thr=0.3, batch_size=4)


def _well_formed(pred: TiledPredictions, size: tuple[int, int]) -> None:
    assert pred.image_size == size
    assert torch.all(pred.scores[:-1] >= pred.scores[1:]) and bool((pred.scores >= 0.3).all())
    for crop, box, rle in zip(pred.crops, pred.boxes.tolist(), pred.to_rles()):
        x1, y1, x2, y2 = (int(v) for v in box)
        assert 0 <= x1 < x2 <= size[1] and 0 <= y1 < y2 <= size[0]
        assert crop.shape == (y2 - y1, x2 - x1) and crop.dtype == bool
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
        dec = mask_util.decode({**rle, "counts": rle["counts"].encode()})
        assert dec.shape == size and int(dec.sum()) == int(crop.sum())
        assert np.array_equal(dec[y1:y2, x1:x2], crop)


def test_real_model_on_a_mosaic_tiled_and_untiled(predictor: Predictor) -> None:
    rng = np.random.default_rng(3)
    cells = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(6)]
    mosaic = np.concatenate([np.concatenate(cells[r * 3 : r * 3 + 3], 1) for r in range(2)], 0)
    assert mosaic.shape == (128, 240, 3)
    untiled = predictor(mosaic)
    tiled = predict_tiled(predictor, mosaic, tile=64, overlap=0.25)
    _well_formed(tiled, (128, 240))
    assert len(tiled) > 0 and len(untiled) > 0
    # a tile as large as the image: one tile, the predictor's own instances
    whole = predict_tiled(predictor, mosaic, tile=256)
    assert whole.labels.tolist() == untiled.labels.tolist()
    assert torch.equal(whole.scores, untiled.scores)
    assert torch.equal(whole.to_predictions().masks, untiled.masks)
    assert torch.equal(whole.boxes, untiled.boxes)
