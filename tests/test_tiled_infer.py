"""Sliced inference for users: ``predictor(image, tile=...)`` returns the usual ``Results``
(without a full-size mask per instance), ``solov2 infer --tile`` writes ``predictions.json``
that ``solov2 eval --results`` scores, and bad tiling flags are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import pytest
from _errors import one_line_error
from PIL import Image
from test_predictor import CLASSES, IDS, confident_model, random_image, tiny_config
from test_tiling import SceneModel, _coords_image, _disc

from solov2.checkpoint import save_checkpoint
from solov2.cli import main
from solov2.config import config_to_dict
from solov2.data.draw import draw_predictions
from solov2.data.io import read_image
from solov2.infer import Predictor
from solov2.infer.results import Results
from solov2.infer.tile_merge import TiledPredictions
from solov2.infer.tiling import draw_tiled, predict_tiled

H, W = 120, 200  # 3 x 4 tiles of 64 (the tiny model's native tile) at overlap 0.2
TILE = 64


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """test_predictor.py's tiny random model (categories 1, 3, 7, 9; test scale 96x64)."""
    cfg = tiny_config()
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    save_checkpoint(
        path, {"model": confident_model(cfg).state_dict(), "config": config_to_dict(cfg)}
    )
    return path


@pytest.fixture(scope="module")
def predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt, device="cpu", score_thr=None)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "val" / "big.png"
    path.parent.mkdir()
    Image.fromarray(random_image(H, W, 21)).save(path)
    return path


def _decode(seg: dict[str, Any]) -> np.ndarray:
    return mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def test_tiled_results_are_the_librarys_predictions(
    predictor: Predictor, image_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``predictor(x, tile=...)``: the Results API over :func:`predict_tiled`'s instances; RLE,
    overlay, arrays and indexing never build a full-size mask unless ``.masks`` is read."""
    lib = predict_tiled(predictor, image_file, TILE, 0.25, score_thr=0.3)
    r = predictor(image_file, score_thr=0.3, tile=TILE, tile_overlap=0.25)
    assert isinstance(r, Results) and r.tiled and isinstance(r.predictions, TiledPredictions)
    assert len(r) == len(lib) > 3 and r.path == str(image_file) and r.orig_shape == (H, W)

    def no_dense(self: TiledPredictions) -> None:
        raise AssertionError("a full-size mask per instance was built")

    with monkeypatch.context() as m:
        m.setattr(TiledPredictions, "to_predictions", no_dense)
        coco = r.to_coco(image_id=3)
        overlay = r.plot()
        small = r.save(tmp_path / "small.png", max_pixels=H * W // 16)
        arrays = r.numpy(masks=False)
        top = r[r.scores >= r.scores[2]]
    assert [e["segmentation"] for e in coco] == lib.to_rles()
    labels = lib.labels.tolist()
    assert [e["category_id"] for e in coco] == [IDS[i] for i in labels]  # the dataset's ids
    assert [e["category_name"] for e in coco] == [CLASSES[i] for i in labels]
    assert [e["bbox"] for e in coco] == [
        [x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in lib.int_boxes()
    ]
    assert all(e["image_id"] == 3 for e in coco)
    image = read_image(image_file)
    assert np.array_equal(overlay, draw_tiled(image, lib, CLASSES, 0.0).permute(1, 2, 0).numpy())
    assert Image.open(small).size == (W // 4, H // 4)
    assert "masks" not in arrays and arrays["category_ids"].tolist() == [IDS[i] for i in labels]
    assert len(top) == 3 and top.scores.tolist() == r.scores[:3].tolist()
    # asked for explicitly: N x H x W, the same overlay as dense masks give
    assert r.masks.shape == (len(r), H, W)
    assert all(np.array_equal(m.numpy(), _decode(e["segmentation"])) for m, e in zip(r.masks, coco))
    dense = draw_predictions(image, lib.to_predictions(), CLASSES, score_thr=0.0)
    assert np.array_equal(overlay, dense.permute(1, 2, 0).numpy())
    assert r.numpy()["masks"].shape == (len(r), H, W)


def test_one_tile_is_untiled_prediction(predictor: Predictor) -> None:
    """A tile no smaller than the image: one tile, the untiled answer exactly."""
    img = random_image(50, 70, 11)
    tiled, whole = predictor(img, tile=128), predictor(img)
    assert tiled.tiled and not whole.tiled and len(whole) > 0
    assert tiled.to_coco(1) == whole.to_coco(1)
    assert np.array_equal(tiled.plot(), whole.plot())


def test_object_split_by_a_tile_border_is_one_instance(predictor: Predictor) -> None:
    """Through the Predictor: a disc cut by the border of tiles 0..100 and 80..180 (known
    scene) comes back as one instance whose mask is the disc."""
    h, w = 100, 180
    disc = _disc(h, w, 90, 50, 40)
    scene = SceneModel([(disc, 1, 0.9)])
    p = Predictor(predictor.model, predictor.cfg, device="cpu", threads=None)
    p.predict_tensors = scene.predict_tensors  # type: ignore[method-assign]
    r = p(_coords_image(h, w), tile=100, tile_overlap=0.2)
    assert sorted(scene.tiles) == [(0, 0, 100, 100), (80, 0, 180, 100)]
    assert len(r) == 1 and r.class_names == [CLASSES[1]] and r.category_ids.tolist() == [IDS[1]]
    assert np.array_equal(_decode(r.to_coco(1)[0]["segmentation"]), disc)


def test_tiling_set_once_at_construction(ckpt: Path, predictor: Predictor) -> None:
    """``Predictor.from_checkpoint(..., tile=, tile_overlap=)``: every call tiles as
    ``predictor(x, tile=, tile_overlap=)`` does; a call's own values take precedence."""
    img = random_image(H, W, 5)
    tiled = Predictor.from_checkpoint(ckpt, device="cpu", score_thr=None, tile=TILE)
    assert (tiled.tile, tiled.tile_overlap) == (TILE, 0.2)
    a, b = tiled(img), predictor(img, tile=TILE, tile_overlap=0.2)
    assert a.tiled and a.to_coco(1) == b.to_coco(1) and len(a) > 3
    c = tiled(img, tile_overlap=0.4)
    assert c.to_coco(1) == predictor(img, tile=TILE, tile_overlap=0.4).to_coco(1)
    assert c.to_coco(1) != a.to_coco(1)
    with pytest.raises(ValueError, match="tile"):
        Predictor(predictor.model, predictor.cfg, device="cpu", threads=None, tile=0)
    with pytest.raises(TypeError, match="tile_size"):
        Predictor(predictor.model, predictor.cfg, device="cpu", threads=None, tile_size=64)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("tile", "overlap"), [(0, 0.2), (-64, 0.2), (64.5, 0.2), (64, 1.0), (64, -0.1)]
)
def test_bad_tiling_is_a_value_error(predictor: Predictor, tile: Any, overlap: float) -> None:
    with pytest.raises(ValueError, match="tile"):
        predictor(random_image(50, 70, 1), tile=tile, tile_overlap=overlap)


def _infer(ckpt: Path, image: Path, out: Path, *flags: str) -> list[dict[str, Any]]:
    args = ["infer", "--checkpoint", str(ckpt), str(image), "--output-dir", str(out)]
    assert main([*args, "--device", "cpu", *flags]) == 0
    return json.loads((out / "predictions.json").read_text())


def test_infer_tile_writes_what_eval_results_scores(
    ckpt: Path, image_file: Path, tmp_path: Path
) -> None:
    """``solov2 infer --tile``: predictions.json entries as untiled infer writes them (keys, the
    dataset's ids, RLE at the image's size), equal to ``Results.to_coco`` of the tiled
    Predictor; ``solov2 eval --results`` scores them (against themselves as ground truth: AP
    100)."""
    tiled = _infer(ckpt, image_file, tmp_path / "tiled", "--tile", str(TILE))
    untiled = _infer(ckpt, image_file, tmp_path / "untiled")
    assert tiled and untiled and tiled != untiled
    assert {tuple(e) for e in tiled} == {tuple(e) for e in untiled}  # same keys, same order
    assert sorted(p.name for p in (tmp_path / "tiled").iterdir()) == ["big.png", "predictions.json"]
    r = Predictor.from_checkpoint(ckpt, device="cpu")(image_file, tile=TILE, tile_overlap=0.2)
    for w, e in zip(tiled, r.to_coco(image_id=1), strict=True):
        assert w.pop("file_name") == str(image_file) and e.pop("image_id") == 1
        assert w == e
    for e in tiled:
        assert _decode(e["segmentation"]).shape == (H, W) and e["score"] >= 0.3
        assert e["category_id"] == IDS[CLASSES.index(e["category_name"])]
    # ground truth: the tiled instances themselves
    root = image_file.parent.parent
    gt = {
        "images": [{"id": 1, "file_name": image_file.name, "height": H, "width": W}],
        "categories": [{"id": i, "name": n} for i, n in zip(IDS, CLASSES)],
        "annotations": [
            {
                "id": k + 1,
                "image_id": 1,
                "category_id": e["category_id"],
                "iscrowd": 0,
                "segmentation": e["segmentation"],
                "bbox": e["bbox"],
                "area": float(_decode(e["segmentation"]).sum()),
            }
            for k, e in enumerate(tiled)
        ],
    }
    ann = tmp_path / "gt.json"
    ann.write_text(json.dumps(gt))
    ev = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--results",
            str(tmp_path / "tiled" / "predictions.json"),
            "--annotations",
            str(ann),
            "--images",
            str(root / "val"),
            "--output-dir",
            str(ev),
            "--max-dets",
            "300",
        ]
    )
    assert code == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["segm"]["AP"] == pytest.approx(100.0) and m["num_detections"] == len(tiled)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--tile", "0"], "--tile"),
        (["--tile", "-64"], "--tile"),
        (["--tile", "big"], "--tile"),
        (["--tile", "64", "--tile-overlap", "1.0"], "--tile-overlap"),
        (["--tile", "64", "--tile-overlap", "-0.1"], "--tile-overlap"),
        (["--tile-overlap", "0.3"], "--tile-overlap"),
    ],
)
def test_bad_tile_flags_are_one_line(
    image_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    needle: str,
) -> None:
    args = ["infer", "--checkpoint", str(tmp_path / "none.pth"), str(image_file), *flags]
    try:
        code = main([*args, "--output-dir", str(tmp_path / "out")])
    except SystemExit as e:  # argparse's own errors
        code = int(e.code or 0)
    assert code == 2
    one_line_error(capsys.readouterr().err, "infer", needle)
    assert not (tmp_path / "out").exists()
