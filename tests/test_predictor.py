"""Predictor, visualisation and the infer command on a tiny random ``solov2_demo`` model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from _match import assert_same_instances, predictor_ties
from PIL import Image

from solov2.checkpoint import save_checkpoint, save_safetensors
from solov2.cli.infer import run_infer
from solov2.config import Config, config_to_dict
from solov2.data.draw import save_png
from solov2.errors import CheckpointError, UserError
from solov2.infer import Predictor, draw_predictions, preprocess_images, resize_keep_ratio_size
from solov2.model import build_model
from solov2.presets import get_config
from solov2.structures import Predictions
from solov2.utils.fileio import safe_name

CLASSES = ["circle", "square", "triangle", "star"]


def tiny_config() -> Config:
    cfg = get_config("solov2_demo")
    cfg.data.test_scale = [96, 64]
    cfg.data.class_names = list(CLASSES)
    return cfg


def confident_model(cfg: Config) -> torch.nn.Module:
    """Random weights, rescaled so that a few hundred (cell, class) pairs pass score_thr and the
    masks are far from the 0.5 threshold (stable under float rounding)."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.head.solo_cate.bias.fill_(-4.0)
        model.head.solo_cate.weight.mul_(10.0)
        model.head.solo_kernel.weight.mul_(30.0)
    return model


def random_image(h: int, w: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tiny_config()
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    save_checkpoint(
        path,
        {"model": confident_model(cfg).state_dict(), "config": config_to_dict(cfg), "iteration": 0},
    )
    return path


@pytest.fixture(scope="module")
def predictor(ckpt: Path) -> Predictor:
    return Predictor.from_checkpoint(ckpt, device="cpu")


def assert_same(a: Predictions, b: Predictions) -> None:
    """The same computation on the same pixels (input kinds, EXIF, checkpoint formats): exact."""
    assert a.labels.tolist() == b.labels.tolist()
    assert torch.equal(a.scores, b.scores) and torch.equal(a.masks, b.masks)


def test_resize_rule() -> None:
    assert resize_keep_ratio_size(480, 640, (1333, 800)) == (800, 1067)
    assert resize_keep_ratio_size(100, 1000, (1333, 800)) == (133, 1333)
    assert resize_keep_ratio_size(50, 70, (96, 64)) == (64, 90)
    batch, sizes, orig = preprocess_images(
        [torch.zeros(3, 50, 70, dtype=torch.uint8), torch.zeros(3, 60, 60, dtype=torch.uint8)],
        (96, 64),
    )
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == torch.uint8
    assert sizes.tolist() == [[64, 90], [64, 64]] and orig.tolist() == [[50, 70], [60, 60]]


def test_input_kinds_identical(predictor: Predictor, tmp_path: Path) -> None:
    arr = random_image(50, 70, 1)
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    inputs = [str(path), path, Image.open(path), arr, torch.from_numpy(arr).permute(2, 0, 1)]
    preds = [predictor(x) for x in inputs]
    assert all(isinstance(p, Predictions) for p in preds)
    assert len(preds[0]) > 0
    for p in preds[1:]:
        assert_same(preds[0], p)
    assert predictor.class_names == CLASSES


def test_exif_orientation(predictor: Predictor, tmp_path: Path) -> None:
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(random_image(40, 72, 2)).save(path, exif=exif)
    by_path = predictor(path)
    assert by_path.masks.shape[-2:] == (72, 40)
    assert_same(by_path, predictor(Image.open(path)))


def test_batch_equals_one_by_one(predictor: Predictor) -> None:
    images = [random_image(50, 70, s) for s in range(3)] + [random_image(64, 40, 9)]
    batched = predictor(images)
    assert isinstance(batched, list) and len(batched) == 4
    for img, pred in zip(images, batched):
        single = predictor(img)
        # batched convolutions round differently: the instances a user sees, not bit equality
        test = predictor.cfg.model.test
        assert_same_instances(
            single,
            pred,
            score_tol=1e-4,
            iou=0.95,
            ties=predictor_ties(predictor, img),
            thresholds=[test.update_thr],
            max_det=test.max_per_img,
            min_matched=3,
        )
        assert pred.masks.shape == (len(pred), *img.shape[:2]) and pred.masks.dtype == torch.bool
        assert pred.boxes.shape == (len(pred), 4) and pred.masks.device.type == "cpu"
        assert torch.all(pred.scores[:-1] >= pred.scores[1:])


def test_score_thr(predictor: Predictor) -> None:
    img = random_image(50, 70, 3)
    full = predictor(img)
    cut = predictor(img, score_thr=0.3)
    assert 0 < len(cut) < len(full) and bool((cut.scores >= 0.3).all())


def test_safetensors_and_errors(ckpt: Path, predictor: Predictor, tmp_path: Path) -> None:
    sd = torch.load(ckpt, weights_only=True)
    st = tmp_path / "w.safetensors"
    save_safetensors(st, sd["model"], sd["config"])
    img = random_image(50, 70, 4)
    assert_same(Predictor.from_checkpoint(st, device="cpu")(img), predictor(img))
    official = tmp_path / "official.pth"
    torch.save({"state_dict": {"bbox_head.x": torch.zeros(1)}, "meta": {}}, official)
    with pytest.raises(CheckpointError, match="convert"):
        Predictor.from_checkpoint(official)
    bad = tmp_path / "bad.pth"
    state = dict(sd["model"])
    state.pop("head.solo_kernel.bias")
    state["extra.weight"] = torch.zeros(1)
    save_checkpoint(bad, {"model": state, "config": sd["config"]})
    with pytest.raises(CheckpointError, match="head.solo_kernel.bias.*extra.weight"):
        Predictor.from_checkpoint(bad)


def test_draw_predictions(predictor: Predictor, tmp_path: Path) -> None:
    img = torch.from_numpy(random_image(50, 70, 5)).permute(2, 0, 1).contiguous()
    pred = predictor(img)
    vis = draw_predictions(img, pred, predictor.class_names, score_thr=0.3)
    assert vis.shape == img.shape and vis.dtype == torch.uint8 and not torch.equal(vis, img)
    empty = draw_predictions(img, pred, predictor.class_names, score_thr=2.0)
    assert torch.equal(empty, img)
    out = save_png(vis, tmp_path / "v.png")
    assert np.array_equal(np.asarray(Image.open(out)), vis.permute(1, 2, 0).numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["v.png"]  # no temp file left


def test_safe_name() -> None:
    used: set[str] = set()
    assert safe_name("a", used) == "a.png"
    assert safe_name("A", used) == "A_1.png"
    for stem in ("../../etc/passwd", "..", "x/y\\z", "/abs", ".hidden", "C:\\win"):
        name = safe_name(stem, used)
        assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert safe_name("..", used) == "image_1.png"


def test_run_infer(ckpt: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(random_image(50, 70, 6)).save(src / "a.png")
    Image.fromarray(random_image(60, 48, 7)).save(src / "sub" / "a.jpg")
    Image.fromarray(random_image(50, 70, 8)).save(src / "..odd name!.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    (src / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="solov2"):
        ret = run_infer(
            ckpt, [str(src), str(src / "*.png")], out, score_thr=0.3, device="cpu", batch_size=2
        )
    assert ret == out
    assert "broken.jpg" in caplog.text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.png", "a_1.png", "odd_name_.png", "predictions.json"]
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["file_name"] for r in results} <= {str(p) for p in src.rglob("*")}
    for r in results:
        assert r["score"] >= 0.3 and r["category_name"] in CLASSES
        assert r["category_id"] == CLASSES.index(r["category_name"]) + 1
        mask = mask_util.decode(
            {"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()}
        )
        h, w = np.asarray(Image.open(r["file_name"])).shape[:2]
        assert mask.shape == (h, w) and mask.any()
        assert r["bbox"] == pytest.approx(
            mask_util.toBbox(mask_util.encode(np.asfortranarray(mask))).tolist()
        )
    with pytest.raises(UserError):
        run_infer(ckpt, [str(tmp_path / "missing")], out, device="cpu")
