"""Tests of the synthetic COCO shapes generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from solov2.data.synthetic import SHAPE_CLASSES, make_synthetic_coco

SIZE = (96, 128)


def _make(root: Path, **kw: object) -> dict:
    args: dict = {"num_images": (8, 4), "image_size": SIZE, "seed": 0}
    args.update(kw)
    return make_synthetic_coco(root, **args)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synth")
    return root, _make(root)


def test_files_exist_and_load(small: tuple[Path, dict]) -> None:
    root, summary = small
    for split, n in (("train", 8), ("val", 4)):
        ann_file = root / "annotations" / f"instances_{split}.json"
        assert ann_file.is_file()
        coco = COCO(str(ann_file))
        assert len(coco.getImgIds()) == n
        assert summary["splits"][split]["images"] == n
        assert summary["splits"][split]["annotations"] == len(coco.getAnnIds())
        for img in coco.loadImgs(coco.getImgIds()):
            path = root / split / img["file_name"]
            assert path.is_file()
            with Image.open(path) as im:
                assert im.size == (img["width"], img["height"]) == (SIZE[1], SIZE[0])
                assert im.mode == "RGB"
        assert len(coco.getAnnIds()) > 0


def test_categories_non_contiguous(small: tuple[Path, dict]) -> None:
    root, _ = small
    coco = COCO(str(root / "annotations" / "instances_train.json"))
    cats = coco.loadCats(coco.getCatIds())
    assert [c["name"] for c in cats] == SHAPE_CLASSES
    ids = sorted(c["id"] for c in cats)
    assert ids != list(range(ids[0], ids[0] + len(ids)))
    assert all(c["supercategory"] == "shape" for c in cats)


def test_masks_match_area_bbox_and_are_disjoint(small: tuple[Path, dict]) -> None:
    root, _ = small
    for split in ("train", "val"):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        ann_ids = coco.getAnnIds()
        assert len(set(ann_ids)) == len(ann_ids)
        for img_id in coco.getImgIds():
            union = np.zeros(SIZE, dtype=np.int32)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img_id])):
                assert ann["iscrowd"] == 0
                m = coco.annToMask(ann).astype(bool)
                assert m.shape == SIZE
                assert int(m.sum()) == ann["area"] >= 40
                ys, xs = np.nonzero(m)
                x0, y0 = xs.min(), ys.min()
                tight = [x0, y0, xs.max() - x0 + 1, ys.max() - y0 + 1]
                assert [int(v) for v in ann["bbox"]] == tight
                assert ann["bbox"] == [float(v) for v in tight]
                union += m
            assert union.max() <= 1, "visible masks of one image overlap"


def test_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = {"num_images": (3, 2)}
    _make(a, **kw)
    _make(b, **kw)
    _make(c, seed=1, **kw)
    for split in ("train", "val"):
        ja = (a / "annotations" / f"instances_{split}.json").read_bytes()
        jb = (b / "annotations" / f"instances_{split}.json").read_bytes()
        jc = (c / "annotations" / f"instances_{split}.json").read_bytes()
        assert ja == jb
        assert ja != jc
        for f in sorted((a / split).iterdir()):
            assert f.read_bytes() == (b / split / f.name).read_bytes()


def test_empty_images(tmp_path: Path) -> None:
    summary = _make(tmp_path, empty_fraction=0.5)
    coco = COCO(str(tmp_path / "annotations" / "instances_train.json"))
    empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=[i])]
    assert len(empty) == 4 == summary["splits"]["train"]["empty_images"]
    assert len(coco.getImgIds()) == 8

    none = _make(tmp_path / "none", num_images=(3, 1), empty_fraction=1.0)
    assert none["splits"]["train"]["annotations"] == 0
    coco = COCO(str(tmp_path / "none" / "annotations" / "instances_train.json"))
    assert len(coco.getImgIds()) == 3


def test_polygon_and_rle_present(tmp_path: Path) -> None:
    summary = _make(tmp_path, num_images=(40, 0), empty_fraction=0.0)
    data = json.loads((tmp_path / "annotations" / "instances_train.json").read_text())
    segs = [a["segmentation"] for a in data["annotations"]]
    polys = [s for s in segs if isinstance(s, list)]
    rles = [s for s in segs if isinstance(s, dict)]
    assert polys and rles
    assert all(isinstance(r["counts"], str) for r in rles)
    assert summary["splits"]["train"]["polygon_annotations"] == len(polys)
    assert summary["splits"]["val"]["images"] == 0
    assert sum(summary["splits"]["train"]["per_category"].values()) == len(segs)
    # every class appears, and each non-empty image has 1..max_objects objects
    assert all(v > 0 for v in summary["splits"]["train"]["per_category"].values())
    counts = np.bincount([a["image_id"] for a in data["annotations"]], minlength=41)[1:]
    assert counts.min() >= 1 and counts.max() <= 6


def test_png_format(tmp_path: Path) -> None:
    _make(tmp_path, num_images=(2, 1), image_format="png")
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["000001.png", "000002.png"]
