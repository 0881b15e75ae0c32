"""Seeded procedural generator of a small synthetic COCO instance segmentation dataset.

The dataset contains four shape classes (circle, square, triangle, star) drawn on varied
backgrounds (solid colour, linear gradient, smooth noise, stripes, plus clutter lines that are
not objects). Objects may occlude each other; annotations describe the *visible* part only, so
the masks of one image are pairwise disjoint. Every annotation mask is exact: polygon shapes are
rasterised with pycocotools itself, so a polygon annotation decodes to exactly the drawn pixels.

Layout written under ``root`` (what ``--data-root`` reads)::

    root/annotations/instances_train.json
    root/annotations/instances_val.json
    root/train/000001.jpg ...
    root/val/000001.jpg ...

Generation is deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

__all__ = ["CATEGORY_IDS", "SHAPE_CLASSES", "make_synthetic_coco"]

SHAPE_CLASSES: list[str] = ["circle", "square", "triangle", "star"]
"""Class names, in contiguous-label order."""

CATEGORY_IDS: dict[str, int] = {"circle": 1, "square": 3, "triangle": 7, "star": 9}
"""COCO category ids: deliberately non-contiguous to exercise id mapping."""

_MIN_VISIBLE_PX = 40
_MIN_VISIBLE_FRAC = 0.5
_MIN_INSIDE_FRAC = 0.6
_POLYGON_PROB = 0.43  # of unoccluded, fully inside non-circles: ~20% of all unoccluded
_MIN_COLOR_DIST = 90.0
_JPEG_QUALITY = 90


@dataclass
class _Obj:
    """One accepted object of an image under construction."""

    name: str
    full: np.ndarray  # bool (H, W): the whole shape clipped to the image
    visible: np.ndarray  # bool (H, W): what remains after later objects are drawn
    full_area: int
    polygon: list[float] | None  # exact polygon for polygon shapes, None for circles
    inside: bool  # whole shape lies inside the image


def _rand_color(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour as a float array."""
    return rng.uniform(0.0, 255.0, size=3)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random float32 (H, W, 3) background: solid, gradient, smooth noise or stripes."""
    kind = int(rng.integers(0, 4))
    c0 = _rand_color(rng)
    if kind == 0:  # solid
        bg = np.broadcast_to(c0, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient along a random direction
        c1 = _rand_color(rng)
        ang = rng.uniform(0.0, 2.0 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(ang) + yy * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = c0[None, None, :] * (1.0 - t[..., None]) + c1[None, None, :] * t[..., None]
    elif kind == 2:  # low-frequency colour noise: a tiny random grid upsampled bilinearly
        gh, gw = int(rng.integers(2, 6)), int(rng.integers(2, 7))
        amp = rng.uniform(30.0, 90.0)
        grid = np.clip(c0 + rng.uniform(-amp, amp, size=(gh, gw, 3)), 0, 255).astype(np.uint8)
        bg = np.asarray(
            Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32
        )
    else:  # stripes: sinusoid along a random direction
        c1 = _rand_color(rng)
        ang = rng.uniform(0.0, math.pi)
        period = rng.uniform(20.0, 90.0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * (2 * math.pi / period))
        mix = rng.uniform(0.2, 0.6)
        t = t * mix
        bg = c0[None, None, :] * (1.0 - t[..., None]) + c1[None, None, :] * t[..., None]
    return np.ascontiguousarray(bg, dtype=np.float32)


def _clutter(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """Draw 0..6 random thin lines / polylines (distractors, not objects) onto ``bg``."""
    n = int(rng.integers(0, 7))
    if n == 0:
        return bg
    h, w = bg.shape[:2]
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(n):
        k = int(rng.integers(2, 5))
        pts = [(float(rng.uniform(0, w)), float(rng.uniform(0, h))) for _ in range(k)]
        color = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.line(pts, fill=color, width=int(rng.integers(1, 4)))
    return np.asarray(img, dtype=np.float32)


def _shape_polygon(
    name: str, cx: float, cy: float, diam: float, rng: np.random.Generator
) -> list[float]:
    """Flat [x0, y0, x1, y1, ...] polygon of a square/triangle/star of equivalent diameter."""
    area = math.pi * (diam / 2.0) ** 2
    rot = rng.uniform(0.0, 2.0 * math.pi)
    if name == "square":
        radius = math.sqrt(area) / math.sqrt(2.0)  # circumradius of a square of that area
        angles = [rot + k * math.pi / 2.0 for k in range(4)]
        radii = [radius] * 4
    elif name == "triangle":
        radius = math.sqrt(area / (3.0 * math.sqrt(3.0) / 4.0))
        angles = [rot + k * 2.0 * math.pi / 3.0 for k in range(3)]
        radii = [radius] * 3
    elif name == "star":
        ratio = rng.uniform(0.42, 0.55)
        outer = math.sqrt(area / (5.0 * ratio * math.sin(math.pi / 5.0)))
        angles = [rot + k * math.pi / 5.0 for k in range(10)]
        radii = [outer if k % 2 == 0 else outer * ratio for k in range(10)]
    else:
        raise ValueError(f"not a polygon shape: {name}")
    poly: list[float] = []
    for a, r in zip(angles, radii):
        poly += [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
    return poly


def _poly_mask(poly: list[float], h: int, w: int) -> np.ndarray:
    """Rasterise a polygon exactly as pycocotools' ``annToMask`` does."""
    rle = mask_utils.frPyObjects([poly], h, w)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


def _make_object(
    rng: np.random.Generator, h: int, w: int, scale: float
) -> tuple[str, np.ndarray, list[float] | None, bool, float]:
    """Sample one shape; return (name, full mask, polygon or None, inside image, nominal area)."""
    name = SHAPE_CLASSES[int(rng.integers(0, len(SHAPE_CLASSES)))]
    diam = math.exp(rng.uniform(math.log(24.0), math.log(140.0))) * scale
    cx, cy = float(rng.uniform(0, w)), float(rng.uniform(0, h))
    nominal = math.pi * (diam / 2.0) ** 2
    if name == "circle":
        r = diam / 2.0
        yy, xx = np.ogrid[0:h, 0:w]
        full = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        inside = cx - r >= 0 and cy - r >= 0 and cx + r <= w and cy + r <= h
        return name, full, None, inside, nominal
    poly = _shape_polygon(name, cx, cy, diam, rng)
    xs, ys = poly[0::2], poly[1::2]
    inside = min(xs) >= 0 and min(ys) >= 0 and max(xs) <= w - 1 and max(ys) <= h - 1
    return name, _poly_mask(poly, h, w), poly, inside, nominal


# each class has a colour family (base RGB +- jitter), as real categories have typical
# appearances: shape and colour both tell the class, so a tiny model learns it in minutes
_CLASS_COLORS = {
    "circle": (215.0, 60.0, 50.0),
    "square": (50.0, 90.0, 215.0),
    "triangle": (40.0, 175.0, 70.0),
    "star": (230.0, 200.0, 40.0),
}
_COLOR_JITTER = 45.0


def _class_color(rng: np.random.Generator, name: str) -> np.ndarray:
    base = np.asarray(_CLASS_COLORS[name])
    return np.clip(base + rng.uniform(-_COLOR_JITTER, _COLOR_JITTER, size=3), 0.0, 255.0)


def _pick_color(
    rng: np.random.Generator, canvas: np.ndarray, m: np.ndarray, name: str
) -> np.ndarray:
    """A colour of class ``name``'s family, far (in RGB) from what lies under mask ``m``."""
    under = canvas[m]
    ref = under.mean(axis=0)
    best, best_d = _class_color(rng, name), -1.0
    for _ in range(24):
        c = _class_color(rng, name)
        # distance to the mean and to the darkest/brightest parts of the region below
        d = min(
            float(np.linalg.norm(c - ref)),
            float(np.linalg.norm(c - under.min(axis=0))),
            float(np.linalg.norm(c - under.max(axis=0))),
        )
        if d >= _MIN_COLOR_DIST:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _paint(rng: np.random.Generator, canvas: np.ndarray, m: np.ndarray, color: np.ndarray) -> None:
    """Fill mask ``m`` of ``canvas`` with ``color`` plus a gentle linear shading."""
    ys, xs = np.nonzero(m)
    ang = rng.uniform(0.0, 2.0 * math.pi)
    t = xs * math.cos(ang) + ys * math.sin(ang)
    span = max(float(t.max() - t.min()), 1.0)
    shade = (t - t.min()) / span - 0.5  # in [-0.5, 0.5]
    amp = rng.uniform(0.0, 30.0)
    canvas[ys, xs] = np.clip(color[None, :] + amp * shade[:, None], 0.0, 255.0)


def _render_image(
    rng: np.random.Generator, h: int, w: int, max_objects: int, empty: bool
) -> tuple[np.ndarray, list[_Obj]]:
    """Render one image; return (uint8 HxWx3 image, accepted objects with visible masks)."""
    canvas = _clutter(rng, _background(rng, h, w))
    objs: list[_Obj] = []
    if not empty:
        scale = min(h, w) / 256.0
        target = int(rng.integers(1, max_objects + 1))
        attempts = 0
        while len(objs) < target and attempts < 8 * target:
            attempts += 1
            name, full, poly, inside, nominal = _make_object(rng, h, w, scale)
            full_area = int(full.sum())
            if full_area < _MIN_VISIBLE_PX or full_area < _MIN_INSIDE_FRAC * nominal:
                continue
            # reject an occluder that would hide too much of an earlier object
            new_vis = [o.visible & ~full for o in objs]
            if any(
                int(v.sum()) < max(_MIN_VISIBLE_PX, _MIN_VISIBLE_FRAC * o.full_area)
                for v, o in zip(new_vis, objs)
            ):
                continue
            color = _pick_color(rng, canvas, full, name)
            _paint(rng, canvas, full, color)
            for o, v in zip(objs, new_vis):
                o.visible = v
            objs.append(_Obj(name, full, full.copy(), full_area, poly, inside))
    noise = rng.uniform(0.0, 6.0)
    if noise > 1.0:
        canvas = canvas + rng.normal(0.0, noise, size=canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), objs


def _annotation(rng: np.random.Generator, obj: _Obj, image_id: int, ann_id: int) -> dict[str, Any]:
    """COCO annotation for the visible part of ``obj`` (RLE, or polygon if unoccluded)."""
    vis = obj.visible
    ys, xs = np.nonzero(vis)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    occluded = int(vis.sum()) != obj.full_area
    segm: Any
    if obj.polygon is not None and obj.inside and not occluded and rng.random() < _POLYGON_PROB:
        segm = [list(obj.polygon)]
    else:
        rle = mask_utils.encode(np.asfortranarray(vis.astype(np.uint8)))
        segm = {
            "size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": rle["counts"].decode("ascii"),
        }
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_IDS[obj.name],
        "segmentation": segm,
        "area": int(vis.sum()),
        "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
        "iscrowd": 0,
    }


def _encode(img: np.ndarray, ext: str) -> bytes:
    """Encode an image as JPEG (quality 90) or PNG bytes."""
    buf = io.BytesIO()
    pil = Image.fromarray(img)
    if ext == "png":
        pil.save(buf, format="PNG", optimize=False)
    else:
        pil.save(buf, format="JPEG", quality=_JPEG_QUALITY)
    return buf.getvalue()


@dataclass(frozen=True)
class _Spec:
    """What every split of one dataset shares (:func:`make_synthetic_coco`'s arguments)."""

    h: int
    w: int
    max_objects: int
    seed: int
    empty_fraction: float
    ext: str


def _make_split(
    root: Path, split: str, split_idx: int, num_images: int, spec: _Spec
) -> dict[str, Any]:
    """Generate one split's images and annotation file; return its summary."""
    h, w, max_objects, seed = spec.h, spec.w, spec.max_objects, spec.seed
    empty_fraction, ext = spec.empty_fraction, spec.ext
    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    split_rng = np.random.default_rng([seed, split_idx, 0x5EED])
    n_empty = min(num_images, int(round(empty_fraction * num_images)))
    empty_ids = set(split_rng.permutation(num_images)[:n_empty].tolist())

    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    per_cat = {name: 0 for name in SHAPE_CLASSES}
    n_poly = 0
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_idx, i])
        img, objs = _render_image(rng, h, w, max_objects, i in empty_ids)
        image_id = i + 1
        file_name = f"{image_id:06d}.{ext}"
        (img_dir / file_name).write_bytes(_encode(img, ext))
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        for obj in objs:
            ann = _annotation(rng, obj, image_id, len(anns) + 1)
            anns.append(ann)
            per_cat[obj.name] += 1
            n_poly += isinstance(ann["segmentation"], list)

    coco = {
        "info": {"description": "solov2 synthetic shapes", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": [
            {"id": CATEGORY_IDS[n], "name": n, "supercategory": "shape"} for n in SHAPE_CLASSES
        ],
    }
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(coco, separators=(",", ":"))
    (ann_dir / f"instances_{split}.json").write_text(text, encoding="utf-8")
    return {
        "images": num_images,
        "annotations": len(anns),
        "empty_images": num_images - len({a["image_id"] for a in anns}),
        "per_category": per_cat,
        "polygon_annotations": n_poly,
        "rle_annotations": len(anns) - n_poly,
    }


def make_synthetic_coco(
    root: str | Path,
    *,
    num_images: tuple[int, int] = (300, 60),
    image_size: tuple[int, int] = (256, 320),
    max_objects: int = 6,
    seed: int = 0,
    empty_fraction: float = 0.05,
    image_format: str = "jpg",
) -> dict[str, Any]:
    """Write a synthetic COCO-format shapes dataset under ``root`` and summarise it.

    Args:
        root: output directory; receives ``annotations/``, ``train/`` and ``val/``.
        num_images: ``(train, val)``, the number of images of each split.
        image_size: ``(height, width)`` of every image.
        max_objects: each non-empty image holds 1..``max_objects`` objects (fewer when
            occlusion constraints reject candidates).
        seed: random seed; the same seed gives byte-identical output.
        empty_fraction: fraction of images (per split, rounded) drawn with no objects.
        image_format: ``"jpg"`` (quality 90) or ``"png"``.

    Returns:
        ``{"root", "image_size", "categories": {name: id}, "splits": {split: summary}}`` where
        each split summary has counts of images, annotations, empty images, annotations per
        category and of polygon / RLE segmentations.
    """
    h, w = int(image_size[0]), int(image_size[1])
    if h < 32 or w < 32:
        raise ValueError(f"image_size too small: {image_size}")
    if max_objects < 1:
        raise ValueError(f"max_objects must be >= 1, got {max_objects}")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1], got {empty_fraction}")
    ext = {"jpg": "jpg", "jpeg": "jpg", "png": "png"}.get(image_format.lower())
    if ext is None:
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    spec = _Spec(h, w, max_objects, seed, empty_fraction, ext)
    splits: dict[str, Any] = {}
    num_train, num_val = num_images
    for idx, (split, n) in enumerate((("train", num_train), ("val", num_val))):
        splits[split] = _make_split(out, split, idx, n, spec)
    return {
        "root": str(out),
        "image_size": [h, w],
        "categories": dict(CATEGORY_IDS),
        "splits": splits,
    }
