"""Predictor, its results, visualisation and the infer command on a tiny random ``solov2_demo``
model whose dataset numbers its categories 1, 3, 7, 9."""

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
from solov2.cli.infer import InferOptions, run_infer
from solov2.config import DEFAULT_SCORE_THR, Config, config_to_dict
from solov2.data.coco_names import COCO_CATEGORY_IDS, COCO_CLASSES
from solov2.data.draw import save_png
from solov2.errors import CheckpointError, UserError
from solov2.infer import Predictor, draw_predictions, preprocess_images, resize_keep_ratio_size
from solov2.infer.results import Results
from solov2.model import build_model
from solov2.presets import get_config
from solov2.structures import Predictions
from solov2.utils.fileio import safe_name

CLASSES = ["circle", "square", "triangle", "star"]
IDS = [1, 3, 7, 9]  # the dataset's category ids (data/synthetic.py's)


def tiny_config() -> Config:
    cfg = get_config("solov2_demo")
    cfg.data.test_scale = [96, 64]
    cfg.data.class_names = list(CLASSES)
    cfg.data.category_ids = list(IDS)
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
    """Every instance the post-processing returns (no final threshold): many to compare."""
    return Predictor.from_checkpoint(ckpt, device="cpu", score_thr=None)


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
    assert all(isinstance(p, Results) for p in preds)
    assert all(isinstance(p.predictions, Predictions) for p in preds)
    assert len(preds[0]) > 0
    for p in preds[1:]:
        assert_same(preds[0], p)
    assert predictor.class_names == CLASSES and predictor.category_ids == IDS
    assert [p.path for p in preds] == [str(path), str(path), None, None, None]


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


def test_score_thr(predictor: Predictor, ckpt: Path) -> None:
    img = random_image(50, 70, 3)
    full = predictor(img)
    cut = predictor(img, score_thr=0.3)
    assert 0 < len(cut) < len(full) and bool((cut.scores >= 0.3).all())
    # what a user gets by default: the instances scoring >= 0.3, as solov2 infer keeps
    assert DEFAULT_SCORE_THR == 0.3
    default = Predictor.from_checkpoint(ckpt, device="cpu")
    assert default.score_thr == 0.3
    assert_same(default(img), cut)
    assert_same(default(img, score_thr=0.5), predictor(img, score_thr=0.5))
    assert torch.equal(cut.scores, full.scores[full.scores >= 0.3])  # a prefix of the full list


def test_safetensors_and_errors(ckpt: Path, predictor: Predictor, tmp_path: Path) -> None:
    sd = torch.load(ckpt, weights_only=True)
    st = tmp_path / "w.safetensors"
    save_safetensors(st, sd["model"], sd["config"])
    img = random_image(50, 70, 4)
    assert_same(Predictor.from_checkpoint(st, device="cpu", score_thr=None)(img), predictor(img))
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
            ckpt,
            [str(src), str(src / "*.png")],
            out,
            device="cpu",
            options=InferOptions(score_thr=0.3, batch_size=2),
        )
    assert ret == out
    assert "broken.jpg" in caplog.text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.png", "a_1.png", "odd_name_.png", "predictions.json"]
    results = json.loads((out / "predictions.json").read_text())
    assert results and {r["file_name"] for r in results} <= {str(p) for p in src.rglob("*")}
    for r in results:
        assert r["score"] >= 0.3 and r["category_name"] in CLASSES
        assert r["category_id"] == IDS[CLASSES.index(r["category_name"])]  # the dataset's
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


def test_results_api(predictor: Predictor, tmp_path: Path) -> None:
    """Names, ids, arrays, COCO entries, drawing and indexing of one image's results."""
    img = torch.from_numpy(random_image(50, 70, 11)).permute(2, 0, 1).contiguous()
    r = predictor(img, score_thr=0.3)
    assert isinstance(r, Results) and len(r) >= 3
    labels = r.labels.tolist()
    assert r.names == dict(enumerate(CLASSES))
    assert r.class_names == [CLASSES[i] for i in labels]
    assert r.category_ids.tolist() == [IDS[i] for i in labels]
    arrays = r.numpy()
    assert arrays["masks"].dtype == np.bool_ and arrays["masks"].shape == (len(r), 50, 70)
    assert np.array_equal(arrays["masks"], r.masks.numpy())
    assert arrays["category_ids"].tolist() == [IDS[i] for i in labels]
    assert arrays["class_names"].tolist() == r.class_names
    assert np.array_equal(arrays["scores"], r.scores.numpy())
    # COCO entries: the dataset's ids, RLE that decodes to each mask, the mask's box
    coco = r.to_coco(image_id=42)
    assert len(coco) == len(r)
    for e, m, label, score in zip(coco, r.masks, labels, r.scores.tolist()):
        assert e["image_id"] == 42 and e["category_id"] == IDS[label]
        assert e["category_name"] == CLASSES[label] and e["score"] == round(score, 5)
        rle = {"size": e["segmentation"]["size"], "counts": e["segmentation"]["counts"].encode()}
        assert np.array_equal(mask_util.decode(rle).astype(bool), m.numpy())
        assert e["bbox"] == pytest.approx(mask_util.toBbox(rle).tolist())
    json.dumps(coco)  # plain JSON types
    # drawing: the overlay draw_predictions makes (solov2 infer's), HWC for the user
    overlay = r.plot()
    drawn = draw_predictions(img, r.predictions, CLASSES, score_thr=0.0)
    assert overlay.shape == (50, 70, 3) and overlay.dtype == np.uint8
    assert np.array_equal(overlay, drawn.permute(1, 2, 0).numpy())
    assert not np.array_equal(overlay, img.permute(1, 2, 0).numpy())
    png = r.save(tmp_path / "r.png")
    assert np.array_equal(np.asarray(Image.open(png)), overlay)
    jpg = r.save(tmp_path / "r.jpg")
    assert Image.open(jpg).format == "JPEG" and Image.open(jpg).size == (70, 50)
    # indexing and iteration give Results of the chosen instances
    assert len(r[0]) == 1 and r[0].scores.item() == r.scores[0].item()
    assert r[-1].class_names == [r.class_names[-1]]
    strong = r[r.scores >= r.scores[1]]
    assert len(strong) >= 2 and strong.category_ids.tolist() == r.category_ids.tolist()[:2]
    assert [x.scores.item() for x in r] == r.scores.tolist()
    assert len(r[[0, 2]]) == 2 and r[[0, 2]].labels.tolist() == [labels[0], labels[2]]
    with pytest.raises(IndexError):
        r[len(r)]
    empty = predictor(img, score_thr=1.0)
    assert len(empty) == 0 and empty.to_coco(1) == [] and empty.category_ids.tolist() == []
    assert np.array_equal(empty.plot(), img.permute(1, 2, 0).numpy())


def test_results_write_what_infer_writes(ckpt: Path, tmp_path: Path) -> None:
    """``Results.to_coco`` and ``Results.save`` are what ``solov2 infer`` writes for the same
    image: the same entries (``image_id`` for ``file_name``) and the same overlay pixels."""
    path = tmp_path / "one.png"
    Image.fromarray(random_image(50, 70, 12)).save(path)
    run_infer(ckpt, [str(path)], tmp_path / "out", device="cpu", options=InferOptions(batch_size=1))
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    r = Predictor.from_checkpoint(ckpt, device="cpu")(path)
    assert len(written) == len(r) > 0
    for w, e in zip(written, r.to_coco(image_id=5)):
        assert w.pop("file_name") == str(path) and e.pop("image_id") == 5
        assert w == e
    r.save(tmp_path / "mine.png")
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "mine.png")),
        np.asarray(Image.open(tmp_path / "out" / "one.png")),
    )


def test_checkpoints_without_category_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Checkpoints trained before the ids were stored: 1..N assumed, said once per checkpoint;
    ``data.category_ids=[...]`` gives them; COCO's 80 classes (also in mmdetection v1's
    spelling, as the official SOLO files carry them) get COCO's ids and names."""
    cfg = tiny_config()
    cfg.data.category_ids = []
    old = tmp_path / "old.pth"
    save_checkpoint(
        old, {"model": confident_model(cfg).state_dict(), "config": config_to_dict(cfg)}
    )
    with caplog.at_level(logging.WARNING, logger="solov2"):
        first = Predictor.from_checkpoint(old, device="cpu")
        again = Predictor.from_checkpoint(old, device="cpu")
    assert first.category_ids == again.category_ids == [1, 2, 3, 4]
    said = [r.getMessage() for r in caplog.records if "stores no category ids" in r.message]
    assert len(said) == 1 and said[0].startswith(f"{old} stores no category ids")
    assert "data.category_ids=[...]" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="solov2"):
        fixed = Predictor.from_checkpoint(
            old, device="cpu", overrides=["data.category_ids=[1,3,7,9]"]
        )
    assert fixed.category_ids == IDS and not caplog.records
    coco = get_config("solov2_demo")
    coco.data.test_scale = [96, 64]
    coco.model.num_classes = 80
    v1 = [n.replace(" ", "_") for n in COCO_CLASSES]  # traffic_light, fire_hydrant, ...
    assert v1 != list(COCO_CLASSES)
    coco.data.class_names = v1
    path = tmp_path / "coco_v1.pth"
    save_checkpoint(path, {"model": build_model(coco).state_dict(), "config": config_to_dict(coco)})
    with caplog.at_level(logging.WARNING, logger="solov2"):
        p = Predictor.from_checkpoint(path, device="cpu")
    assert p.category_ids == list(COCO_CATEGORY_IDS) and p.category_ids[-1] == 90
    assert p.class_names == list(COCO_CLASSES) and not caplog.records
