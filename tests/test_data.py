"""Tests of the data package: COCO parsing, image reading, transforms, batching."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _paths import SHARED
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import DistributedSampler

from solov2.config import DataCfg
from solov2.data import (
    CocoInstances,
    DataWarning,
    GroupedBatchSampler,
    ImageReadError,
    RankStridedSampler,
    ShuffleSampler,
    build_test_loader,
    build_train_loader,
    build_transforms,
    collate,
    dataset_from_config,
    image_size,
    read_image,
    rescale_size,
)
from solov2.errors import DataError
from solov2.ops.masks import masks_to_boxes as boxes_from_masks
from solov2.structures import Instances, Sample

torch.set_num_threads(1)
# pycocotools 2.0.11 + numpy 2 warn inside mask.decode; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
COCO128 = SHARED / "datasets" / "coco128_seg"


def rect(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def write_dataset(
    root: Path,
    anns: list[dict[str, Any]],
    images: list[dict[str, Any]] | None = None,
    cats: list[dict[str, Any]] | None = None,
    write_images: bool = True,
) -> Path:
    """A COCO json (``root/ann.json``) and solid-colour PNGs (``root/img/``); returns json path."""
    images = (
        images
        if images is not None
        else [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    )
    cats = cats if cats is not None else [{"id": 1, "name": "thing"}]
    for i, a in enumerate(anns):
        a.setdefault("id", i + 1)
        a.setdefault("image_id", 1)
        a.setdefault("category_id", cats[0]["id"])
        a.setdefault("iscrowd", 0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    if write_images:
        for im in images:
            p = root / "img" / im["file_name"]
            if im["file_name"].startswith(("/", "..")) or ".." in im["file_name"]:
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (im["width"], im["height"]), (10, 20, 30)).save(p)
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def load(root: Path, **kw: Any) -> CocoInstances:
    kw.setdefault("train", False)
    return CocoInstances(root / "ann.json", root / "img", **kw)


# ---------------------------------------------------------------------------------------------
# annotations


def test_polygon_rectangle_exact_pixels(tmp_path: Path) -> None:
    write_dataset(tmp_path, [{"segmentation": [rect(3, 2, 9, 5)]}])
    s = load(tmp_path)[0]
    assert isinstance(s, Sample) and s.image.shape == (3, 20, 30) and s.image.dtype == torch.uint8
    expected = torch.zeros(20, 30, dtype=torch.uint8)
    expected[2:5, 3:9] = 1
    assert s.instances.masks.dtype == torch.uint8
    assert torch.equal(s.instances.masks[0], expected)
    assert s.instances.boxes.tolist() == [[3.0, 2.0, 9.0, 5.0]]
    assert s.instances.boxes.dtype == torch.float32 and s.instances.labels.dtype == torch.int64
    assert s.orig_size == (20, 30) and s.image_id == 1


def test_multipart_polygon(tmp_path: Path) -> None:
    write_dataset(tmp_path, [{"segmentation": [rect(1, 1, 4, 3), rect(20, 10, 25, 15)]}])
    inst = load(tmp_path)[0].instances
    assert len(inst) == 1 and int(inst.masks.sum()) == 3 * 2 + 5 * 5
    assert inst.boxes.tolist() == [[1.0, 1.0, 25.0, 15.0]]


def test_rle_compressed_and_uncompressed_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m1 = (rng.random((20, 30)) > 0.6).astype(np.uint8)
    m2 = np.zeros((20, 30), np.uint8)
    m2[5:9, 7:20] = 1
    rle = mask_utils.encode(np.asfortranarray(m1))
    rle["counts"] = rle["counts"].decode("ascii")
    flat = m2.flatten(order="F")  # uncompressed RLE: column-major runs, starting with zeros
    change = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    write_dataset(
        tmp_path, [{"segmentation": rle}, {"segmentation": {"size": [20, 30], "counts": counts}}]
    )
    inst = load(tmp_path)[0].instances
    assert torch.equal(inst.masks[0], torch.from_numpy(m1))
    assert torch.equal(inst.masks[1], torch.from_numpy(m2))
    assert inst.boxes[1].tolist() == [7.0, 5.0, 20.0, 9.0]


def test_crowd_excluded_and_category_mapping(tmp_path: Path) -> None:
    cats = [{"id": 90, "name": "c90"}, {"id": 5, "name": "c5"}, {"id": 2, "name": "c2"}]
    write_dataset(
        tmp_path,
        [
            {"segmentation": [rect(0, 0, 5, 5)], "category_id": 90},
            {"segmentation": [rect(10, 0, 15, 5)], "category_id": 2},
            {"segmentation": [rect(0, 10, 5, 15)], "category_id": 5, "iscrowd": 1},
        ],
        cats=cats,
    )
    ds = load(tmp_path)
    assert ds.cat_ids == [2, 5, 90] and ds.class_names == ["c2", "c5", "c90"]
    inst = ds[0].instances
    assert inst.labels.tolist() == [2, 0]
    assert ds.stats["crowd_annotations"] == 1
    assert len(ds.coco.getAnnIds(imgIds=[1])) == 3  # crowd kept for evaluation
    assert ds.coco.anns[3]["iscrowd"] == 1 and "area" in ds.coco.anns[1]


def test_negatives_kept_or_filtered(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
        {"id": 3, "file_name": "c.png", "height": 8, "width": 30},
        {"id": 4, "file_name": "d.png", "height": 20, "width": 30},
    ]
    write_dataset(
        tmp_path,
        [
            {"segmentation": [rect(0, 0, 5, 5)]},
            {"segmentation": [rect(0, 0, 5, 5)], "image_id": 3},
            {"segmentation": [rect(0, 0, 5, 5)], "image_id": 4, "iscrowd": 1},
        ],
        images=images,
    )
    ds = load(tmp_path, train=True)
    assert ds.image_ids == [1, 2, 3, 4]
    neg = ds[1]
    assert neg.instances.masks.shape == (0, 20, 30) and neg.instances.boxes.shape == (0, 4)
    assert load(tmp_path, train=False, filter_empty=True, min_size=10).image_ids == [1, 2, 3, 4]
    ds = load(tmp_path, train=True, filter_empty=True, min_size=10)
    assert ds.image_ids == [1]
    assert ds.stats["filtered_empty"] == 2 and ds.stats["filtered_small"] == 1
    assert ds.aspect_ratios() == [1.5]


def test_degenerate_annotations_skipped_with_warnings(tmp_path: Path) -> None:
    write_dataset(
        tmp_path,
        [
            {"segmentation": [rect(0, 0, 5, 5)]},
            {"id": 11, "segmentation": [[1, 1, 4, 4]]},  # 2 points
            {"id": 12, "segmentation": []},
            {"id": 13},  # no segmentation
            {"id": 14, "segmentation": [rect(0, 0, 5, 5)], "bbox": [0, 0, 0, 5]},
            {"id": 15, "segmentation": [[1, 1, 5, 1, 9, 1]]},  # collinear: decodes to 0 px
            {"id": 16, "segmentation": [rect(2, 2, 6, 6), [1, 2, 3]]},  # bad part dropped only
        ],
    )
    with pytest.warns(DataWarning) as rec:
        ds = load(tmp_path)
        inst = ds[0].instances
    msgs = [str(w.message) for w in rec]
    for aid, reason in [
        (11, "3 points"),
        (12, "empty"),
        (13, "missing"),
        (14, "bbox"),
        (15, "zero area"),
    ]:
        hit = [m for m in msgs if f"annotation {aid}:" in m]
        assert len(hit) == 1 and reason in hit[0] and "ann.json" in hit[0] and "image 1" in hit[0]
    assert ds.stats["skipped_annotations"] == 5 and ds.stats["dropped_polygon_parts"] == 1
    assert len(inst) == 2


def test_path_traversal_skipped(tmp_path: Path) -> None:
    (tmp_path / "secret.png").write_bytes(b"x")
    images = [
        {"id": i, "file_name": f, "height": 20, "width": 30}
        for i, f in enumerate(
            ["../secret.png", "/etc/passwd", "sub/../../secret.png", "C:\\x.png", "sub/../a.png"], 1
        )
    ]
    write_dataset(tmp_path, [], images=images)
    Image.new("RGB", (30, 20)).save(tmp_path / "img" / "a.png")
    with pytest.warns(DataWarning, match="outside the image folder"):
        ds = load(tmp_path)
    assert ds.image_ids == [5] and ds.stats["unsafe_paths"] == 4
    assert ds.image_path(0) == os.path.join(str(tmp_path / "img"), "a.png")
    assert ds[0].image.shape == (3, 20, 30)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("missing_file", "annotation file not found"),
        ("bad_json", "invalid JSON at line 1 column"),
        ("top_list", "top level must be an object"),
        ("no_annotations", "missing top-level key 'annotations'"),
        ("bad_category", "annotations[0] (id=7) has category_id 999 not in categories"),
        ("bad_image_id", "annotations[0] (id=7) has image_id 42 not in images"),
        ("bad_width", "images[0].width must be a positive integer"),
        ("bad_segmentation", "annotations[0] (id=7).segmentation must be"),
        ("no_images", "'images' is empty"),
        ("dup_image", "images[1] duplicates image id 1"),
        ("no_folder", "image folder not found"),
    ],
)
def test_fatal_errors_one_line(tmp_path: Path, case: str, expect: str) -> None:
    img = {"id": 1, "file_name": "a.png", "height": 20, "width": 30}
    data: Any = {
        "images": [img],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "segmentation": [rect(0, 0, 5, 5)]}
        ],
    }
    (tmp_path / "img").mkdir()
    path = tmp_path / "ann.json"
    text = None
    if case == "bad_json":
        text = json.dumps(data)[:40]
    elif case == "top_list":
        data = [data]
    elif case == "no_annotations":
        del data["annotations"]
    elif case == "bad_category":
        data["annotations"][0]["category_id"] = 999
    elif case == "bad_image_id":
        data["annotations"][0]["image_id"] = 42
    elif case == "bad_width":
        img["width"] = "abc"
    elif case == "bad_segmentation":
        data["annotations"][0]["segmentation"] = "polygon"
    elif case == "no_images":
        data["images"], data["annotations"] = [], []
    elif case == "dup_image":
        data["images"].append(dict(img))
    elif case == "no_folder":
        (tmp_path / "img").rmdir()
    if case != "missing_file":
        path.write_text(text if text is not None else json.dumps(data))
    with pytest.raises(DataError) as ei:
        CocoInstances(path, tmp_path / "img", train=True)
    msg = str(ei.value)
    assert expect in msg and "\n" not in msg
    assert msg.startswith(str(tmp_path / ("img" if case == "no_folder" else "ann.json")))


# ---------------------------------------------------------------------------------------------
# images


def test_read_image_modes(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    cases: dict[str, tuple[Image.Image, tuple[int, int, int]]] = {
        "gray.png": (Image.new("L", (6, 4), 77), (77, 77, 77)),
        "rgba.png": (Image.new("RGBA", (6, 4), (1, 2, 3, 0)), (1, 2, 3)),
        "pal.png": (
            Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE),
            (200, 100, 50),
        ),
        "cmyk.jpg": (Image.new("CMYK", (6, 4), (0, 0, 0, 0)), (255, 255, 255)),
        "g16.png": (Image.fromarray(np.full((4, 6), 65535, np.uint16)), (255, 255, 255)),
        "g16b.png": (Image.fromarray(np.full((4, 6), 32896, np.uint16)), (128, 128, 128)),
        "i32.tif": (Image.fromarray(np.full((4, 6), 65535, np.int32)), (255, 255, 255)),
    }
    for name, (im, color) in cases.items():
        im.save(tmp_path / name)
        t = read_image(tmp_path / name)
        assert t.shape == (3, 4, 6) and t.dtype == torch.uint8, name
        got = t[:, 0, 0].tolist()
        assert all(abs(a - b) <= 2 for a, b in zip(got, color)), (name, got)
    # EXIF orientation 6 (rotate 90 CW on display): stored 6x4 -> displayed 4 wide, 6 high
    im = Image.new("RGB", (6, 4), (0, 0, 0))
    im.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.png", exif=exif.tobytes())
    t = read_image(tmp_path / "rot.png")
    assert t.shape == (3, 6, 4) and image_size(tmp_path / "rot.png") == (6, 4)
    assert int(t[0, 0, 3]) == 255 and int(t[0, 0, 0]) == 0  # top-left went to top-right
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_truncated_image_skipped_and_next_returned(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "a.jpg", "height": 64, "width": 64},
        {"id": 2, "file_name": "b.png", "height": 20, "width": 30},
    ]
    write_dataset(tmp_path, [{"segmentation": [rect(0, 0, 5, 5)], "image_id": 2}], images=images)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, format="JPEG"
    )
    (tmp_path / "img" / "a.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    ds = load(tmp_path)
    with pytest.warns(DataWarning, match="a.jpg"):
        s = ds[0]
    assert s.image_id == 2 and len(s.instances) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert ds[0].image_id == 2  # known bad: no second warning
    assert ds.stats["unreadable_images"] == 1
    (tmp_path / "img" / "b.png").unlink()
    with pytest.warns(DataWarning, match="b.png not found"):
        assert ds.verify_images() == [str(tmp_path / "img" / "b.png")]
    assert ds.image_ids == [1]
    with pytest.raises(DataError, match="none of the 1 images"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        ds[0]


def test_json_size_mismatch_uses_file_size(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": 20, "width": 30}]
    write_dataset(tmp_path, [{"segmentation": [rect(3, 2, 9, 5)]}], images=images)
    Image.new("RGB", (60, 40)).save(tmp_path / "img" / "a.png")  # twice the JSON size
    ds = load(tmp_path)
    with pytest.warns(DataWarning, match="40x60 but the JSON says 20x30"):
        s = ds[0]
    assert s.image.shape == (3, 40, 60) and s.orig_size == (40, 60)
    assert s.instances.masks.shape == (1, 40, 60)
    assert s.instances.boxes.tolist() == [[6.0, 4.0, 18.0, 10.0]]
    assert ds.stats["size_mismatch"] == 1


# ---------------------------------------------------------------------------------------------
# transforms


def test_resize_rule() -> None:
    assert rescale_size(480, 640, (1333, 800)) == (800, 1067)
    assert rescale_size(480, 640, (768, 448)) == (448, 597)
    assert rescale_size(640, 480, (800, 1333)) == (1067, 800)
    tf = build_transforms(False, [[768, 448]], 0.5)
    masks = torch.zeros(2, 480, 640, dtype=torch.uint8)
    masks[0, 100:200, 100:300] = 1
    masks[1, 0, 0] = 1  # a 1-pixel instance that may vanish
    inst = Instances(masks, torch.tensor([0, 1]), boxes_from_masks(masks))
    image, out = tf(torch.zeros(3, 480, 640, dtype=torch.uint8), inst)
    assert image.shape == (3, 448, 597) and image.dtype == torch.uint8
    assert out.masks.shape[1:] == (448, 597) and out.masks.dtype == torch.uint8
    assert out.boxes.shape == (len(out), 4) and bool(out.masks.flatten(1).any(1).all())
    empty = Instances.empty(480, 640)
    _, e = tf(torch.zeros(3, 480, 640, dtype=torch.uint8), empty)
    assert e.masks.shape == (0, 448, 597) and e.boxes.shape == (0, 4)


def test_flip_flips_mask_and_box() -> None:
    masks = torch.zeros(1, 20, 30, dtype=torch.uint8)
    masks[0, 2:5, 3:9] = 1
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[0, 0, 0] = 255
    tf = build_transforms(True, [[30, 20]], 1.0)
    out_img, out = tf(image, Instances(masks, torch.tensor([0]), boxes_from_masks(masks)))
    assert out_img.shape == (3, 20, 30) and int(out_img[0, 0, 29]) == 255
    assert torch.equal(out.masks[0], masks[0].flip(-1))
    assert out.boxes.tolist() == [[21.0, 2.0, 27.0, 5.0]]  # [W - x2, y1, W - x1, y2]


# ---------------------------------------------------------------------------------------------
# batching


def make_sample(h: int, w: int, n: int, image_id: int) -> Sample:
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    masks[:, :2, :2] = 1
    return Sample(
        torch.full((3, h, w), 7, dtype=torch.uint8),
        Instances(masks, torch.zeros(n, dtype=torch.int64), boxes_from_masks(masks)),
        image_id,
        (h * 2, w * 2),
        f"{image_id}.png",
    )


def test_collate_pads_to_multiple_of_32() -> None:
    b = collate([make_sample(50, 70, 2, 1), make_sample(64, 33, 0, 2)])
    assert b.images.shape == (2, 3, 64, 96) and b.images.dtype == torch.uint8
    assert b.image_sizes.tolist() == [[50, 70], [64, 33]] and b.image_sizes.dtype == torch.int64
    assert b.orig_sizes.tolist() == [[100, 140], [128, 66]]
    assert int(b.images[0, :, 50:].sum()) == 0 and int(b.images[0, :, :, 70:].sum()) == 0
    assert b.targets is not None and b.targets[0].masks.shape == (2, 64, 96)
    assert b.targets[1].masks.shape == (0, 64, 96) and b.image_ids == [1, 2]
    assert collate([make_sample(50, 70, 2, 1)], with_targets=False).targets is None


def test_grouped_batch_sampler() -> None:
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1]
    counts = []
    for rank in (0, 1):
        sampler = DistributedSampler(range(len(groups)), num_replicas=2, rank=rank, seed=3)
        bs = GroupedBatchSampler(sampler, groups, batch_size=2)
        bs.set_epoch(1)
        batches = list(bs)
        counts.append(len(batches))
        assert len(batches) == len(bs) == 3
        for b in batches:
            assert len(b) == 2 and len({groups[i] for i in b}) == 1
    assert counts[0] == counts[1]
    assert list(RankStridedSampler(7, 1, 3)) == [1, 4]
    keys = ["b", "a", "b", "a", "c", "a", "b"]  # e.g. padded input sizes
    shards = [list(RankStridedSampler(7, r, 2, keys)) for r in (0, 1)]
    assert shards == [[0, 2, 6, 4], [1, 3, 5]]  # stable, by key
    assert sorted(shards[0] + shards[1]) == list(range(7))


def test_grouped_batch_sampler_no_group_starves() -> None:
    # 10 items, 6 landscape (group 0) and 4 portrait (group 1), batch 8: one batch per epoch.
    # Dropping leftovers at each epoch end would never train the portrait group; carried over,
    # both groups get batches, and every item is seen.
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0]
    bs = GroupedBatchSampler(ShuffleSampler(len(groups), 0), groups, batch_size=8)
    seen: list[list[int]] = []
    for epoch in range(8):
        bs.set_epoch(epoch)
        batches = list(bs)
        assert len(batches) == 1 and len(batches[0]) == 8
        assert len({groups[i] for i in batches[0]}) == 1
        seen.append(batches[0])
    assert {groups[b[0]] for b in seen} == {0, 1}
    assert set().union(*seen) == set(range(len(groups)))
    # epochs entered out of order (resume) replay the carry: the same batches
    fresh = GroupedBatchSampler(ShuffleSampler(len(groups), 0), groups, batch_size=8)
    for epoch in (5, 2, 7):
        fresh.set_epoch(epoch)
        assert list(fresh) == [seen[epoch]]


def test_loaders_deterministic(tmp_path: Path) -> None:
    images = [
        {
            "id": i,
            "file_name": f"{i}.png",
            "height": 20 if i % 2 else 30,
            "width": 30 if i % 2 else 20,
        }
        for i in range(1, 9)
    ]
    write_dataset(
        tmp_path,
        [{"segmentation": [rect(0, 0, 5, 5)], "image_id": i} for i in range(1, 9)],
        images=images,
    )
    ds = load(tmp_path, transform=build_transforms(True, [[64, 32], [48, 24]], 0.5))

    def epoch_ids(epoch: int) -> list[list[int]]:
        loader = build_train_loader(ds, 2, 0, aspect_grouping=True, seed=5)
        loader.set_epoch(epoch)
        out = []
        for b in loader:
            assert b.images.shape[-1] % 32 == 0 and b.images.shape[-2] % 32 == 0
            ar = (b.image_sizes[:, 1] >= b.image_sizes[:, 0]).tolist()
            assert len(set(ar)) == 1
            out.append(b.image_ids)
        return out

    a = epoch_ids(0)
    assert a == epoch_ids(0) and len(a) == 4 and sorted(sum(a, [])) == list(range(1, 9))
    assert a != epoch_ids(1)
    test = build_test_loader(ds, 3, 0)
    ids = [i for b in test for i in b.image_ids]
    assert ids == list(range(1, 9))
    # with the test scale, items come ordered by padded input size: one size per batch
    ds_test = load(tmp_path, transform=build_transforms(False, [[64, 32]], 0.0))
    test = build_test_loader(ds_test, 4, 0, test_scale=[64, 32])
    batches = list(test)
    assert [b.image_ids for b in batches] == [[1, 3, 5, 7], [2, 4, 6, 8]]
    assert [tuple(b.images.shape[-2:]) for b in batches] == [(32, 64), (64, 32)]


def test_dataset_from_config(tmp_path: Path) -> None:
    write_dataset(tmp_path / "root" / "x", [{"segmentation": [rect(0, 0, 5, 5)]}])
    (tmp_path / "root" / "annotations").mkdir()
    os.replace(
        tmp_path / "root" / "x" / "ann.json",
        tmp_path / "root" / "annotations" / "instances_val.json",
    )
    os.replace(tmp_path / "root" / "x" / "img", tmp_path / "root" / "val")
    cfg = DataCfg(data_root=str(tmp_path / "root"), val_split="val", test_scale=[64, 32])
    ds = dataset_from_config(cfg, "val", train=False)
    assert ds[0].image.shape == (3, 32, 48)  # factor min(64/30, 32/20) = 1.6
    with pytest.raises(DataError, match="instances_train2017.json: annotation file not found"):
        dataset_from_config(cfg, "train", train=True)
    with pytest.raises(DataError, match="data.train_json is not set"):
        dataset_from_config(DataCfg(), "train", train=True)


@pytest.mark.skipif(not COCO128.is_dir(), reason="coco128_seg not available")
def test_coco128_train_items() -> None:
    ds = CocoInstances(
        COCO128 / "annotations" / "instances_train.json",
        COCO128 / "train",
        build_transforms(True, [[320, 256]], 0.5),
        train=True,
        filter_empty=True,
    )
    assert len(ds) == 100 and len(ds.class_names) == 80 and ds.cat_ids[-1] == 90
    for i in range(3):
        s = ds[i]
        h, w = s.image.shape[1:]
        assert max(h, w) <= 320 and min(h, w) <= 256 and len(s.instances) > 0
        assert s.instances.masks.shape[1:] == (h, w)
        assert int(s.instances.labels.max()) < 80
        b = s.instances.boxes
        assert bool((b[:, 2] > b[:, 0]).all()) and bool((b[:, 3] <= h).all())
