"""Bounded memory for huge images in `solov2 infer`, and overlays readable at any size."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from solov2.data.draw import caption_font_size, draw_predictions, label_color
from solov2.infer.large import read_image_bounded, upsample_rle
from solov2.ops.masks import masks_to_boxes
from solov2.structures import Predictions


def _jpeg(path: Path, h: int, w: int, orientation: int = 1) -> Path:
    arr = np.empty((h, w, 3), np.uint8)  # smooth gradients: a small, quick JPEG
    arr[..., 0] = (np.arange(w) * 255 // w).astype(np.uint8)
    arr[..., 1] = (np.arange(h) * 255 // h).astype(np.uint8)[:, None]
    arr[..., 2] = 64
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=85, exif=exif)
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3000x4000 (12 Mpx) JPEG stored sideways: EXIF orientation 6 displays it 4000x3000."""
    return _jpeg(tmp_path_factory.mktemp("big") / "big.jpg", 3000, 4000, orientation=6)


def _index(n_out: int, n_in: int) -> np.ndarray:
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)


@pytest.mark.parametrize(
    ("h", "w", "H", "W"),
    [(7, 5, 21, 16), (30, 40, 75, 101), (3, 3, 3, 3), (5, 9, 13, 30), (8, 8, 5, 6)],
)
def test_upsample_rle_is_the_rle_of_the_upsampled_mask(
    h: int,
    w: int,
    H: int,  # noqa: N803
    W: int,
) -> None:  # noqa: N803
    rng = np.random.default_rng(h * w)
    stripes = np.zeros((h, w), bool)
    stripes[:, ::2] = True  # uniform columns of both values, side by side
    for m in (
        rng.random((h, w)) > 0.5,
        np.zeros((h, w), bool),
        np.ones((h, w), bool),
        stripes,
        ~stripes,
    ):
        full = m[_index(H, h)][:, _index(W, w)]
        ref = mask_util.encode(np.asfortranarray(full.astype(np.uint8)))
        assert upsample_rle(m, (H, W)) == {"size": [H, W], "counts": ref["counts"].decode()}


def test_huge_jpeg_is_decoded_reduced(big: Path) -> None:
    """12 Mpx file, 1 Mpx cap: the decoder's DCT scaling gives at most 1 Mpx and the numpy
    buffers stay at that size (a full decode would hold 36 MB, twice)."""
    cap = 1_000_000
    tracemalloc.start()
    image, size = read_image_bounded(big, cap)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert size == (4000, 3000)  # displayed (EXIF-rotated) size of the file
    h, w = image.shape[-2:]
    assert cap // 4 <= h * w <= cap and abs(h / w - 4000 / 3000) < 0.01
    assert peak < 6 * cap + (1 << 20), peak  # two uint8 RGB copies of the reduced image
    small, size = read_image_bounded(big, 50_000_000)  # under the cap: the full image
    assert tuple(small.shape[-2:]) == size == (4000, 3000)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from solov2.checkpoint import save_checkpoint
    from solov2.config import apply_overrides, config_to_dict
    from solov2.model import build_model
    from solov2.presets import get_config

    cfg = apply_overrides(
        get_config("solov2_demo"), ["model.head.num_grids=[12,10,8,6,4]", "data.test_scale=[96,64]"]
    )
    cfg.data.class_names = ["a", "b", "c", "d"]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model_final.pth"
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg)})
    return path


def test_infer_reduces_huge_images_and_keeps_full_size_predictions(
    big: Path, ckpt: Path, tmp_path: Path
) -> None:
    from solov2.cli import main

    out = tmp_path / "pred"
    assert (
        main(
            [
                "infer",
                "--checkpoint",
                str(ckpt),
                str(big),
                "--output-dir",
                str(out),
                "--device",
                "cpu",
                "--score-thr",
                "0.001",
                "--max-pixels",
                "1000000",
                "model.test.max_per_img=4",
            ]
        )
        == 0
    )
    with Image.open(out / "big.png") as vis:
        assert vis.width * vis.height <= 1_000_000 and vis.height > vis.width
    preds = json.loads((out / "predictions.json").read_text())
    assert preds
    for p in preds[:3]:
        rle = {**p["segmentation"], "counts": p["segmentation"]["counts"].encode()}
        assert p["segmentation"]["size"] == [4000, 3000]
        assert mask_util.decode(rle).shape == (4000, 3000)
        assert p["bbox"] == pytest.approx(mask_util.toBbox(rle).tolist())
        assert mask_util.area(rle) > 0


def test_captions_scale_with_the_image_and_sit_on_a_box() -> None:
    assert caption_font_size(192, 240) == 12
    assert caption_font_size(3000, 4000) == 49
    h, w = 2000, 3000
    img = torch.full((3, h, w), 128, dtype=torch.uint8)
    m = torch.zeros(1, h, w, dtype=torch.bool)
    m[0, 500:1500, 500:1500] = True
    pred = Predictions(m, torch.tensor([2]), torch.tensor([0.9]), masks_to_boxes(m))
    vis = draw_predictions(img, pred, ["a", "b", "circle"])
    color = torch.tensor(label_color(2), dtype=torch.uint8).view(3, 1)
    column = vis[:, 420:500, 502]  # just above the box's top-left corner
    filled = int((column == color).all(0).sum())
    assert filled >= caption_font_size(h, w) * 0.8, filled  # a caption box of the font's height
    inside = vis[:, 1000, 1000]  # the mask is blended with its colour at alpha 0.5
    assert torch.allclose(inside.float(), (128 + color.view(3).float()) / 2, atol=1)
