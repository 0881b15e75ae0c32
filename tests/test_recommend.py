"""Scale recommendation (``solov2.data.recommend``): hand-placed objects with known cells,
shares and caps, and synthetic datasets whose answer follows from the object sizes: 10-px
objects in 256x256 images need the preset's scale x2.2 (to 38 px), large sparse objects keep it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from solov2.cli import main
from solov2.config import apply_overrides
from solov2.data.coco import CocoInstances
from solov2.data.recommend import (
    TYPICAL_PX,
    InstanceGeometry,
    _risk,
    check_scale,
    recommend_scales,
    scale_warnings,
)
from solov2.data.stats import dataset_stats
from solov2.presets import get_config


def geometry(
    objects: list[tuple[float, float, float, float, int]], hw: tuple[int, int], images: int = 1
) -> InstanceGeometry:
    """``objects`` ``(cx, cy, side, area, label)`` repeated in ``images`` images of size ``hw``:
    square boxes of ``side`` px."""
    o = np.array(objects, dtype=np.float64).reshape(-1, 5)
    n = len(o)
    return InstanceGeometry(
        image_hw=np.array([hw] * images, dtype=np.int64),
        image=np.repeat(np.arange(images), n),
        label=np.tile(o[:, 4], images).astype(np.int64),
        area=np.tile(o[:, 3], images),
        box_wh=np.tile(o[:, [2, 2]], (images, 1)),
        centre=np.tile(o[:, :2], (images, 1)),
    )


def one_level(grid: int, hi: int = 1000) -> object:
    cfg = get_config("solov2_demo")
    cfg.model.head.num_grids, cfg.model.head.strides = [grid], [8]
    cfg.model.head.scale_ranges = [[1, hi]]
    return cfg


def test_check_scale_known_cells() -> None:
    """128x128 at scale 128 (no resize, no padding), grid 8: 16-px cells. A and B share cell
    (0, 0); C in (0, 1) has same-class A/B to its left; F in (1, 2) has C up-left; D in (2, 0) is
    another class than E in (2, 1) to its right; G is larger than every range; A's mask (64 px
    = 4 stride-4 pixels) is under the stride 8."""
    objs = [
        (4, 4, 8, 64, 0),  # A
        (10, 10, 20, 400, 0),  # B
        (20, 4, 20, 400, 0),  # C
        (4, 40, 20, 400, 1),  # D
        (20, 40, 20, 400, 0),  # E
        (40, 20, 20, 400, 0),  # F
        (100, 100, 1100, 10000, 0),  # G: outside [1, 1000]
    ]
    c = check_scale(geometry(objs, (128, 128)), [128, 128], one_level(8))
    assert c.test_scale == [128, 128] and c.max_side == 128 and c.max_upscale == 1.0
    assert c.invisible == round(1 / 7, 4) and c.outside == round(1 / 7, 4)
    assert c.collide == round(2 / 7, 4)  # A, B
    assert c.nms_adjacent == round(4 / 7, 4)  # A, B, C, F
    assert c.size_px["median"] == 20
    # at 2x (256x256, 32-px cells) centres and cells grow together: the same cells, while A's
    # mask is now visible and G in range
    c2 = check_scale(geometry(objs, (128, 128)), [256, 256], one_level(8, hi=4000))
    assert (c2.collide, c2.nms_adjacent) == (c.collide, c.nms_adjacent)
    assert c2.invisible == 0 and c2.outside == 0 and c2.size_px["median"] == 40


def test_objects_count_at_risk_only_on_every_level() -> None:
    """Two same-class objects in one level-0 cell, but the second also in a fine level 1
    where they are apart: only the first collides."""
    cfg = get_config("solov2_demo")
    cfg.model.head.num_grids, cfg.model.head.strides = [2, 64], [8, 8]
    cfg.model.head.scale_ranges = [[1, 100], [15, 100]]
    objs = [(10, 10, 10, 100, 0), (40, 40, 20, 400, 0)]
    c = check_scale(geometry(objs, (128, 128)), [128, 128], cfg)
    assert c.collide == 0.5 and c.nms_adjacent == 0.5


def test_small_objects_are_scaled_up_to_the_typical_size() -> None:
    """10-px squares in 256x256 images: solov2_light_mnv2_448 (768x448) already upscales 1.75x to
    17.5 px; the recommendation scales the boxes by 38 / 17.5 (to multiples of 16)."""
    cfg = get_config("solov2_light_mnv2_448")
    objs = [(20 + 40 * (k % 6), 20 + 40 * (k // 6), 10, 100, 0) for k in range(30)]
    rec = recommend_scales(geometry(objs, (256, 256), images=4), cfg)
    assert rec is not None and rec.current.size_px["median"] == 17.5
    assert rec.test_scale == [1664, 976] and rec.factor == pytest.approx(976 / 448, abs=1e-3)
    assert rec.recommended.size_px["median"] >= 0.98 * TYPICAL_PX
    assert rec.train_scales[0] == [1664, 1104] and rec.train_scales[-1] == [1664, 768]
    assert len(rec.train_scales) == len(cfg.data.train_scales)
    assert rec.overrides == [
        "data.train_scales=[" + ",".join(f"[{a},{b}]" for a, b in rec.train_scales) + "]",
        "data.test_scale=[1664,976]",
    ]
    new = apply_overrides(cfg, rec.overrides)
    assert new.data.test_scale == [1664, 976] and new.data.train_scales == rec.train_scales
    assert rec.current.invisible == 0.0 and rec.current.collide == 0.0
    # caps: the upscale limit (2x the stored size) and the side limit
    capped = recommend_scales(geometry(objs, (256, 256)), cfg, max_upscale=2.0)
    assert capped.recommended.max_upscale <= 2.0 and capped.factor > 1.05
    assert any("short of the target" in r for r in capped.reasons)
    capped = recommend_scales(geometry(objs, (256, 256)), cfg, max_side=600)
    assert capped.recommended.max_side <= 600


def test_large_sparse_objects_keep_the_scale() -> None:
    cfg = get_config("solov2_light_mnv2_448")
    objs = [(120, 100, 150, 15000, 0), (400, 300, 60, 2500, 1), (500, 80, 12, 100, 2)]
    rec = recommend_scales(geometry(objs, (480, 640), images=3), cfg)
    assert rec.overrides == [] and rec.factor == 1.0 and rec.test_scale == [768, 448]
    assert rec.recommended == rec.current and rec.reasons[-1].endswith("fits the objects: keep it")


def test_the_grid_limits_the_scale() -> None:
    """Level 0 (fine grid) holds objects up to 30 px, level 1 above has a 2x2 grid: past 30 px
    the objects collide, so the factor stops where they still fit level 0."""
    cfg = get_config("solov2_demo")
    cfg.model.head.num_grids, cfg.model.head.strides = [40, 2], [8, 32]
    cfg.model.head.scale_ranges = [[1, 30], [31, 2000]]
    cfg.data.train_scales, cfg.data.test_scale = [[192, 192]], [192, 192]
    objs = [(10 + 20 * (k % 9), 10 + 20 * (k // 9), 12, 144, 0) for k in range(81)]
    rec = recommend_scales(geometry(objs, (192, 192)), cfg)
    assert 1.05 < rec.factor and rec.recommended.size_px["median"] <= 30
    assert rec.recommended.collide == 0 and rec.recommended.outside == 0
    assert any("short of the target" in r for r in rec.reasons)
    assert recommend_scales(geometry([], (192, 192)), cfg) is None


def _write(root: Path, side: int, per_image: int, size: int = 256, images: int = 3) -> Path:
    (root / "img").mkdir(parents=True)
    images_js, anns = [], []
    for i in range(images):
        Image.new("RGB", (size, size)).save(root / "img" / f"{i}.png")
        images_js.append({"id": i + 1, "file_name": f"{i}.png", "height": size, "width": size})
        for k in range(per_image):
            x, y = 8 + 40 * (k % 6), 8 + 40 * (k // 6)
            m = np.zeros((size, size), np.uint8, order="F")
            m[y : y + side, x : x + side] = 1
            seg = {"size": [size, size], "counts": mask_utils.encode(m)["counts"].decode()}
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                 "segmentation": seg, "area": side * side, "bbox": [x, y, side, side]}
            )  # fmt: skip
    js = root / "instances.json"
    cats = [{"id": 1, "name": "blob"}]
    js.write_text(json.dumps({"images": images_js, "annotations": anns, "categories": cats}))
    return js


def test_dataset_stats_warns_and_the_overrides_fix_it(tmp_path: Path) -> None:
    js = _write(tmp_path / "small", side=10, per_image=30)
    ds = CocoInstances(js, tmp_path / "small" / "img", train=True)
    cfg = get_config("solov2_light_mnv2_448")
    st = dataset_stats(ds, cfg)
    rec = st.recommended
    assert rec is not None and rec.test_scale == [1664, 976]
    (warn,) = [w for w in st.warnings if w.startswith("small objects")]
    assert warn.startswith("small objects: median 17.5 px at the test scale 768x448, 0.0% with")
    assert "(1664x976: 38.1 px, 0.0%); train and test there: " + " ".join(rec.overrides) in warn
    assert st.to_dict()["recommended"]["overrides"] == rec.overrides
    st2 = dataset_stats(ds, apply_overrides(cfg, rec.overrides))
    assert st2.recommended.overrides == [] and not any("small" in w for w in st2.warnings)
    big = _write(tmp_path / "big", side=36, per_image=4)
    st = dataset_stats(CocoInstances(big, tmp_path / "big" / "img", train=True), cfg)
    assert st.recommended.overrides == [] and st.warnings == []


def test_many_invisible_objects_warn_even_when_the_scale_stays() -> None:
    """7 large objects and 3 of 4x4 px (1 stride-4 pixel): the median keeps the scale, but 30 %
    can never be output; at 1 in 10 there is no warning."""
    cfg = get_config("solov2_light_mnv2_448")
    large = [(60 + 60 * k, 100, 50, 2500, 0) for k in range(7)]
    tiny = [(40 * k + 20, 300, 4, 16, 0) for k in range(3)]
    rec = recommend_scales(geometry(large + tiny, (448, 768)), cfg)
    assert rec.overrides == [] and rec.current.invisible == 0.3
    (w,) = scale_warnings(rec)
    assert w.startswith("30.0% of the instances have masks too small for post-processing")
    rec = recommend_scales(geometry(large + large + tiny[:1] + tiny[:1], (448, 768)), cfg)
    assert rec.current.invisible == 0.125 and scale_warnings(rec) == []


def test_risk_per_object() -> None:
    """Cells (row, col) on a grid of 4, one image: (0, 0) twice; (0, 1) with (0, 0) to its left;
    (1, 2) with (0, 1) up-left; (2, 1) with (1, 2) up-right, which the 2x2 points NMS does not
    compare; (3, 3) of class 1 with (3, 2) of class 0 to its left; (3, 2) with (2, 1) up-left;
    (1, 1) is not at this level (else it would be up-left of (2, 1))."""
    cells = np.array([[0, 0], [0, 0], [0, 1], [1, 2], [2, 1], [3, 3], [3, 2], [1, 1]])
    label = np.array([0, 0, 0, 0, 0, 1, 0, 0])
    hit = np.array([True] * 7 + [False])
    shared, near = _risk(cells, np.zeros(8, np.int64), label, hit, 4)
    assert shared.tolist() == [True, True] + [False] * 6
    assert near.tolist() == [True, True, True, True, False, False, True, False]


def test_cli_stats_prints_the_recommendation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``solov2 data stats``: the scale check side by side (10-px squares: 17.5 px at 768x448,
    38.1 px at 1664x976), the reasons, and the overrides to paste; 36-px squares keep it."""
    js = _write(tmp_path / "small", side=10, per_image=30)
    argv = ["data", "stats", "--config", "solov2_light_mnv2_448", "--annotations", str(js)]
    assert main([*argv, "--images", str(tmp_path / "small" / "img")]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = lines.index(
        "scale check at the test scale (object sizes and centres scaled from the annotations):"
    )
    assert lines[i + 1].split() == ["current", "768x448", "recommended", "1664x976"]
    split = [re.split(r"\s{2,}", ln.strip()) for ln in lines[i + 2 : i + 8]]
    cells = {r[0]: r[1:] for r in split}
    assert cells["object size p10 / median / p90, px"] == ["18 / 18 / 18", "38 / 38 / 38"]
    assert cells["masks too small to keep"] == ["0.0%", "0.0%"]
    assert cells["largest image side, px (upscale)"] == ["448 (1.75x)", "976 (3.812x)"]
    assert lines[i + 8].startswith("  median object 17.5 px (sqrt box area)")
    rec = next(k for k, ln in enumerate(lines) if ln.startswith("recommended: train and test at"))
    assert lines[rec] == (
        "recommended: train and test at x2.179 (paste after the command; solov2 train "
        "--auto-scale applies them):"
    )
    assert lines[rec + 1] == (
        "  data.train_scales=[[1664,1104],[1664,1040],[1664,976],[1664,896],[1664,832],"
        "[1664,768]] data.test_scale=[1664,976]"
    )
    big = _write(tmp_path / "big", side=36, per_image=4)
    assert main([*argv[:-1], str(big), "--images", str(tmp_path / "big" / "img")]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("scale check"))
    assert lines[i + 1].split() == ["current", "768x448"]
    assert "recommended: keep the config's scales" in lines
    assert lines[-1] == "no warnings: the config fits the data"


def _write_dots(root: Path, images: int = 3) -> Path:
    """64x64 images of 4-px dots 10 px apart (36 each), as ``data_root`` (split ``train``).
    solov2_demo (240x192) sees them at 12 px; the recommendation is capped by the 4x upscale
    limit: 256x256 images, scales [320, 256]."""
    (root / "annotations").mkdir(parents=True)
    (root / "train").mkdir()
    ims, anns = [], []
    for i in range(images):
        Image.new("RGB", (64, 64), (30, 30, 30)).save(root / "train" / f"{i}.png")
        ims.append({"id": i + 1, "file_name": f"{i}.png", "height": 64, "width": 64})
        for k in range(36):
            x, y = 2 + 10 * (k % 6), 2 + 10 * (k // 6)
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                 "segmentation": [[x, y, x + 4, y, x + 4, y + 4, x, y + 4]]}
            )  # fmt: skip
    cats = [{"id": 1, "name": "dot"}]
    js = {"images": ims, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(js))
    return root


def test_train_auto_scale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``train --auto-scale``: --print-config shows the scaled config (and why, as YAML
    comments); a run trains it, logs what changed, and stores it in config.yaml and the
    checkpoint. Without the flag the preset's scales stay."""
    root = _write_dots(tmp_path / "dots")
    ds = CocoInstances(root / "annotations" / "instances_train.json", root / "train", train=True)
    rec = dataset_stats(ds, get_config("solov2_demo")).recommended
    assert rec is not None and rec.overrides == [
        "data.train_scales=[[320,256]]",
        "data.test_scale=[320,256]",
    ]
    out = tmp_path / "run"
    argv = ["train", "--config", "solov2_demo", "--data-root", str(root), "--device", "cpu"]
    argv += ["--output-dir", str(out), "--max-iters", "1", "--no-eval", "solver.batch_size=2"]
    assert main([*argv, "--print-config"]) == 0
    assert "test_scale:\n  - 240\n  - 192" in capsys.readouterr().out  # no flag: the preset's
    assert main([*argv, "--auto-scale", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(
        "# auto-scale (x1.333): data.train_scales [[240, 192]] -> [[320, 256]]\n"
        "# auto-scale (x1.333): data.test_scale [240, 192] -> [320, 256]\n"
        "# auto-scale, measured: median object 12 px"
    )
    cfg = yaml.safe_load(text)
    assert cfg["data"]["train_scales"] == [[320, 256]] and cfg["data"]["test_scale"] == [320, 256]
    assert not out.exists()
    assert main([*argv, "--auto-scale"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["train_scales"] == [[320, 256]] and saved["data"]["test_scale"] == [
        320,
        256,
    ]
    ckpt = torch.load(out / "model_final.pth", weights_only=True)
    assert ckpt["config"]["data"]["test_scale"] == [320, 256]
    log = (out / "log.txt").read_text()
    assert "auto-scale (x1.333): data.test_scale [240, 192] -> [320, 256]" in log
    assert "small objects" not in log  # the data-fit report measures the scaled config


def test_the_dense_postprocessing_keeps_small_masks_and_has_no_points_nms() -> None:
    """solov2_light_mnv2_dense (model.test.area_filter=0, points_nms=false): no object is too
    small to keep and none is at the points NMS's risk; the reasons say why. The same objects
    under the reference's post-processing: 3 of 10 too small, the adjacent pairs at risk."""
    objs = [(60 + 60 * k, 100, 50, 2500, 0) for k in range(7)]
    objs += [(20, 300, 2, 4, 0), (26, 300, 2, 4, 0), (32, 300, 2, 4, 0)]
    dense = get_config("solov2_light_mnv2_dense")
    dense.data.train_scales, dense.data.test_scale = [[768, 448]], [768, 448]
    rec = recommend_scales(geometry(objs, (448, 768)), dense)
    assert rec.current.invisible == 0 and rec.current.nms_adjacent is None
    assert "post-processing keeps every non-empty mask (model.test.area_filter=0)" in rec.reasons
    assert any("the 2x2 points NMS is off: model.test.points_nms=false" in r for r in rec.reasons)
    ref = apply_overrides(dense, ["model.test.points_nms=true", "model.test.area_filter=1.0"])
    rec = recommend_scales(geometry(objs, (448, 768)), ref)
    assert rec.current.invisible == 0.3 and rec.current.nms_adjacent == 0.3
