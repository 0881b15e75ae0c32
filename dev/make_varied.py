#!/usr/bin/env python3
"""bbbc039-varied: bbbc039 (one microscope, one stain) made to look like several kinds of data.

Each image gets one look and one field of view, by a hash of its file name (both splits, the
split itself unchanged: by field of view). Looks: fluorescence (as is), inverted (dark nuclei on a
bright background, like brightfield or phase contrast), stain (H&E-like: purple nuclei on pink,
with texture noise). Fields of view: the whole 696x520 image, a 348x260 crop (objects twice as
large at a fixed input scale), a 256x256 crop (2.7x). Instances cut by a crop keep their visible
part when it has at least 16 px. A proxy for users' mixed data built honestly from real images,
for docs/RESULTS.md section 4; it is not a new kind of microscopy::

    python3 dev/make_varied.py shared/datasets/bbbc039 data/bbbc039v
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def _h(name: str, salt: str) -> int:
    return int(hashlib.sha256((salt + name).encode()).hexdigest(), 16)


def _look(gray: np.ndarray, look: str, rng: np.random.Generator) -> np.ndarray:
    t = gray.astype(np.float32) / 255.0
    if look == "fluo":
        rgb = np.repeat(t[..., None], 3, 2)
    elif look == "inv":
        bg = rng.uniform(0.75, 0.9)
        v = bg - (bg - 0.15) * t**0.8 + rng.normal(0, 0.02, t.shape)
        rgb = np.repeat(v[..., None], 3, 2)
    elif look == "stain":
        bg = np.array([0.93, 0.72, 0.82]) + rng.uniform(-0.04, 0.04, 3)
        nuc = np.array([0.33, 0.18, 0.52]) + rng.uniform(-0.05, 0.05, 3)
        tex = rng.normal(0, 0.04, t.shape)[..., None]
        w = np.clip(t**0.7, 0, 1)[..., None]
        rgb = bg * (1 - w) + nuc * w + tex
    else:
        raise ValueError(look)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _view(h: int, w: int, view: str, key: int) -> tuple[int, int, int, int]:
    if view == "full":
        return 0, 0, h, w
    ch, cw = (h // 2, w // 2) if view == "half" else (256, 256)
    y0 = (key >> 8) % (h - ch + 1)
    x0 = (key >> 24) % (w - cw + 1)
    return y0, x0, ch, cw


def convert(src: Path, dst: Path, split: str, looks: list[str], views: list[str]) -> dict:
    data = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
    anns_by_img: dict[int, list] = {}
    for a in data["annotations"]:
        anns_by_img.setdefault(a["image_id"], []).append(a)
    (dst / split).mkdir(parents=True, exist_ok=True)
    images, anns, counts = [], [], {}
    aid = 1
    for im in data["images"]:
        name = im["file_name"]
        key = _h(name, "v1")
        look, view = looks[key % len(looks)], views[(key // 7) % len(views)]
        counts[(look, view)] = counts.get((look, view), 0) + 1
        gray = np.asarray(Image.open(src / split / name).convert("L"))
        y0, x0, ch, cw = _view(gray.shape[0], gray.shape[1], view, key)
        rng = np.random.default_rng(key % (2**32))
        rgb = _look(gray[y0 : y0 + ch, x0 : x0 + cw], look, rng)
        Image.fromarray(rgb).save(dst / split / name, quality=95)
        images.append({**im, "height": ch, "width": cw, "look": look, "view": view})
        for a in anns_by_img.get(im["id"], []):
            m = mask_utils.decode(a["segmentation"])[y0 : y0 + ch, x0 : x0 + cw]
            area = int(m.sum())
            if area < 16:
                continue
            rle = mask_utils.encode(np.asfortranarray(m))
            rle["counts"] = rle["counts"].decode()
            bbox = [float(x) for x in mask_utils.toBbox(rle)]
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": a["category_id"],
                    "segmentation": rle,
                    "area": area,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
            aid += 1
    out = {**data, "images": images, "annotations": anns}
    (dst / "annotations").mkdir(parents=True, exist_ok=True)
    (dst / "annotations" / f"instances_{split}.json").write_text(json.dumps(out))
    return {f"{k[0]}/{k[1]}": v for k, v in sorted(counts.items())} | {"instances": len(anns)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--looks", default="fluo,inv,stain")
    p.add_argument("--views", default="full,half,s256")
    a = p.parse_args()
    for split in ("train", "val"):
        print(
            split, convert(Path(a.src), Path(a.dst), split, a.looks.split(","), a.views.split(","))
        )


if __name__ == "__main__":
    main()
