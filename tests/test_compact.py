"""Compact training masks (``solov2.data.compact``): the packed pipeline gives the dense
pipeline's samples, batches and targets bit for bit.

Known answers: pycocotools' full-frame ``decode``, torchvision's nearest ``resize`` of the masks,
and the dense pipeline itself (``data.compact_masks=false``) on coco128 and bbbc039 items.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _paths import SHARED
from PIL import Image
from pycocotools import mask as mask_utils
from torch.nn import functional as F
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from solov2.config import DataCfg
from solov2.data.compact import pack_masks
from solov2.data.loader import SeededItems, build_train_loader, collate, dataset_from_config
from solov2.data.rle import rle_crop
from solov2.data.transforms import nearest_index
from solov2.structures import PackedMasks
from solov2.targets import build_targets

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation:DeprecationWarning", "ignore:indexing with dtype torch.uint8"
)


def _random_masks(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``n`` uint8 masks: random boxes of random density (some one pixel, some empty)."""
    out = np.zeros((n, h, w), dtype=np.uint8)
    for m in out:
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0, h) + 1, rng.integers(x0, w) + 1
        m[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < rng.choice([0.0, 0.3, 1.0])
    return out


def test_rle_crop_equals_full_decode() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        m = _random_masks(rng, 1, h, w)[0]
        rle = mask_utils.encode(np.asfortranarray(m))
        for r in (rle, {"size": [h, w], "counts": _uncompressed(m)}):
            got = rle_crop(r)
            if not m.any():
                assert got is None
                continue
            assert got is not None
            crop, (y0, y1, x0, x1) = got
            ys, xs = np.nonzero(m)
            assert (y0, y1, x0, x1) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
            assert np.array_equal(crop, m[y0:y1, x0:x1])


def _uncompressed(m: np.ndarray) -> list[int]:
    flat = m.T.ravel()  # column-major
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


@pytest.mark.parametrize("kernel", ["mask", "interpolate"])
def test_nearest_index_is_the_resize_kernel(kernel: str) -> None:
    rng = np.random.default_rng(1)
    for h, w, nh, nw in [
        (7, 9, 7, 9),
        (5, 6, 10, 12),
        (40, 31, 13, 9),
        (23, 17, 61, 44),
        (520, 696, 800, 1071),
        (480, 640, 427, 569),
        (3, 1000, 2, 1333),
    ]:
        m = torch.from_numpy(_random_masks(rng, 3, h, w))
        if kernel == "mask":
            want = TF.resize(
                tv_tensors.Mask(m), [nh, nw], interpolation=InterpolationMode.NEAREST
            ).as_subclass(torch.Tensor)
        else:
            want = F.interpolate(m[None], size=(nh, nw), mode="nearest")[0]
        rows, cols = nearest_index(h, nh, kernel), nearest_index(w, nw, kernel)
        assert torch.equal(m[:, rows][:, :, cols], want)


def test_pack_masks_round_trip_with_flip_and_frame() -> None:
    rng = np.random.default_rng(2)
    h, w, nh, nw = 30, 40, 17, 61
    masks = _random_masks(rng, 12, h, w)
    rows, cols = nearest_index(h, nh), nearest_index(w, nw)
    dense = torch.from_numpy(masks)[:, rows][:, :, cols].flip(-1)
    sources = [
        c
        for c in (rle_crop(mask_utils.encode(np.asfortranarray(m))) for m in masks)
        if c is not None
    ]
    packed, kept = pack_masks(sources, rows, cols, True, (nh, nw))
    nonempty = [i for i, m in enumerate(masks) if m.any()]
    want = dense[nonempty][[k for k in kept]]
    assert want.flatten(1).any(1).all() and len(kept) == int(dense.flatten(1).any(1).sum())
    framed = packed.with_frame(nh + 7, nw + 3)
    got = framed.to_dense()
    assert got.shape == (len(kept), nh + 7, nw + 3) and got.dtype == torch.uint8
    assert (
        torch.equal(got[:, :nh, :nw], want) and got[:, nh:].sum() == 0 and got[:, :, nw:].sum() == 0
    )
    empty = PackedMasks(
        torch.zeros(0, dtype=torch.uint8), torch.zeros((0, 4), dtype=torch.int64), (5, 6)
    )
    assert empty.to_dense().shape == (0, 5, 6)
    with pytest.raises(ValueError):
        packed.with_frame(nh - 1, nw)


def _pair(root: Path, scales: list[list[int]], **kw: object) -> tuple[SeededItems, SeededItems]:
    base = dict(data_root=str(root), train_split="train", train_scales=scales, **kw)
    return (
        SeededItems(dataset_from_config(DataCfg(**base, compact_masks=True), "train", True)),
        SeededItems(dataset_from_config(DataCfg(**base, compact_masks=False), "train", True)),
    )


def _assert_same_batches(compact: SeededItems, dense: SeededItems, keys: list[list[tuple]]) -> int:
    """Batches of the two pipelines: same images, labels, boxes, masks and training targets."""
    n = 0
    for batch_keys in keys:
        a = collate([compact[k] for k in batch_keys])
        b = collate([dense[k] for k in batch_keys])
        assert all(isinstance(t.masks, PackedMasks) for t in a.targets or [])
        a = a.to("cpu")
        assert torch.equal(a.images, b.images) and torch.equal(a.image_sizes, b.image_sizes)
        for ta, tb in zip(a.targets or [], b.targets or []):
            assert torch.equal(ta.labels, tb.labels) and torch.equal(ta.boxes, tb.boxes)
            assert ta.masks.dtype == tb.masks.dtype and torch.equal(ta.masks, tb.masks)
            n += len(ta)
        hf, wf = a.images.shape[-2] // 4, a.images.shape[-1] // 4
        grids, ranges = (
            [40, 36, 24, 16, 12],
            [[1, 96], [48, 192], [96, 384], [192, 768], [384, 2048]],
        )
        ga = build_targets(a.targets or [], (hf, wf), grids, ranges, 80)
        gb = build_targets(b.targets or [], (hf, wf), grids, ranges, 80)
        for f in (
            "cate_labels",
            "pos_batch",
            "pos_cell",
            "pos_inst",
            "mask_targets",
            "num_pos_cells",
        ):
            assert torch.equal(getattr(ga, f), getattr(gb, f)), f
    return n


@pytest.mark.skipif(not (SHARED / "datasets" / "coco128_seg").is_dir(), reason="no coco128")
def test_compact_equals_dense_on_coco128() -> None:
    """Polygons and RLE, several scales (up and down), flips: same batches and targets."""
    compact, dense = _pair(SHARED / "datasets" / "coco128_seg", [[640, 400], [320, 200], [97, 61]])
    keys = [[(i, 77 + i), (i + 1, 78 + i)] for i in range(0, 24, 3)]
    assert _assert_same_batches(compact, dense, keys) > 50


@pytest.mark.skipif(not (SHARED / "datasets" / "bbbc039").is_dir(), reason="no bbbc039")
def test_compact_equals_dense_on_bbbc039() -> None:
    """Dense small objects (~120 nuclei per image) up- and downscaled."""
    compact, dense = _pair(SHARED / "datasets" / "bbbc039", [[900, 672], [300, 200]])
    keys = [[(i, 5 + i), (i + 7, 9 + i)] for i in (0, 40, 90)]
    assert _assert_same_batches(compact, dense, keys) > 300


def test_compact_equals_dense_when_json_size_differs(tmp_path: Path) -> None:
    """Masks decoded at the JSON size, resized to the file size, then transformed: the two
    nearest resizes compose into one index map. Polygons, compressed and uncompressed RLE."""
    (tmp_path / "train").mkdir()
    (tmp_path / "annotations").mkdir()
    rng = np.random.default_rng(3)
    images, anns = [], []
    for i, ((jh, jw), (fh, fw)) in enumerate([((40, 60), (52, 71)), ((50, 30), (33, 21))]):
        Image.fromarray(rng.integers(0, 255, (fh, fw, 3), dtype=np.uint8)).save(
            tmp_path / "train" / f"{i}.png"
        )
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": jh, "width": jw})
        m1, m2 = _random_masks(rng, 2, jh, jw)
        m1[3:9, 4:12] = 1
        m2[jh // 2 :, jw // 2 :] = 1
        rle = mask_utils.encode(np.asfortranarray(m1))
        rle["counts"] = rle["counts"].decode()
        anns += [
            {"segmentation": rle},
            {"segmentation": {"size": [jh, jw], "counts": _uncompressed(m2)}},
            {"segmentation": [[1, 1, jw - 5, 2, jw / 2, jh - 3]]},
        ]
    for k, a in enumerate(anns):
        a.update(id=k + 1, image_id=k // 3 + 1, category_id=1 + k % 2, iscrowd=0)
    (tmp_path / "annotations" / "instances_train.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            }
        )
    )
    with pytest.warns(UserWarning, match="masks resized with nearest"):
        compact, dense = _pair(tmp_path, [[90, 60], [40, 25]], min_size=0)
        keys = [[(0, s)] for s in range(6)] + [[(1, s)] for s in range(6)]
        assert _assert_same_batches(compact, dense, keys) >= 24


def test_compact_loader_through_a_worker(tmp_path: Path) -> None:
    """Packed masks cross the worker boundary; the dense loader gives the same batches."""
    from solov2.data.synthetic import make_synthetic_coco

    make_synthetic_coco(tmp_path, num_images=(4, 1), image_size=(48, 64), empty_fraction=0)
    out = []
    for compact in (True, False):
        cfg = DataCfg(
            data_root=str(tmp_path),
            train_split="train",
            train_scales=[[96, 64]],
            compact_masks=compact,
        )
        loader = build_train_loader(
            dataset_from_config(cfg, "train", True), 2, 1, aspect_grouping=False, seed=3
        )
        loader.set_epoch(0)
        out.append([b.to("cpu") for b in loader])
    for a, b in zip(*out):
        assert torch.equal(a.images, b.images)
        for ta, tb in zip(a.targets or [], b.targets or []):
            assert torch.equal(ta.masks, tb.masks) and torch.equal(ta.boxes, tb.boxes)


def _pack(masks: torch.Tensor) -> PackedMasks:
    """``[N, H, W]`` 0/1 masks as the compact pipeline packs them: each tight-box crop row-major,
    concatenated, ``numpy.packbits``."""
    boxes, crops = [], []
    for m in masks.numpy():
        ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
        y1, y2, x1, x2 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        boxes.append([x1, y1, x2, y2])
        crops.append(m[y1:y2, x1:x2].ravel())
    flat = np.concatenate(crops) if crops else np.zeros(0, np.uint8)
    return PackedMasks(
        torch.from_numpy(np.packbits(flat)),
        torch.tensor(boxes, dtype=torch.int64).view(-1, 4),
        (masks.shape[1], masks.shape[2]),
    )


def test_unpack_masks_of_a_batch_equals_each_image_alone() -> None:
    """Known answer: random masks packed per image (some images without instances, crops from
    one pixel to the whole frame, streams not a multiple of 8 bits) unpack in one pass to the
    masks themselves; ``Batch.to`` takes that pass and gives the same targets."""
    from solov2.structures import Batch, Instances, unpack_masks

    g = torch.Generator().manual_seed(0)
    h, w = 23, 31
    dense, packs = [], []
    for n in (3, 0, 1, 5, 0, 2):
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        for i in range(n):
            y1, x1 = (int(torch.randint(0, s, (1,), generator=g)) for s in (h, w))
            y2 = int(torch.randint(y1 + 1, h + 1, (1,), generator=g))
            x2 = int(torch.randint(x1 + 1, w + 1, (1,), generator=g))
            crop = (torch.rand(y2 - y1, x2 - x1, generator=g) > 0.5).to(torch.uint8)
            crop[0, 0] = crop[-1, -1] = 1  # the crop is the mask's tight box
            masks[i, y1:y2, x1:x2] = crop
        dense.append(masks)
        packs.append(_pack(masks))
    got = unpack_masks(packs)
    for a, b, p in zip(got, dense, packs):
        assert torch.equal(a, b) and torch.equal(p.to_dense(), b)
    targets = [
        Instances(p, torch.zeros(len(p), dtype=torch.int64), torch.zeros(len(p), 4)) for p in packs
    ]
    batch = Batch(
        torch.zeros(len(packs), 3, h, w, dtype=torch.uint8),
        torch.tensor([[h, w]] * len(packs)),
        torch.tensor([[h, w]] * len(packs)),
        list(range(len(packs))),
        targets,
    ).to("cpu")
    for t, b in zip(batch.targets or [], dense):
        assert torch.equal(t.masks, b)  # type: ignore[arg-type]
