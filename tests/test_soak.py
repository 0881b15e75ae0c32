"""Soak test of the Predictor: 1,000 images of random sizes, resident memory flat after warm-up.

A tiny randomly initialised model whose classification bias is raised so that every image yields
instances: the whole post-processing (mask resize to each original size, Matrix NMS, boxes)
runs on every call. Inputs alternate between tensors, numpy arrays, PIL images and files, in
calls of 1 to 4 images. See docs/RELIABILITY.md.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solov2.config import apply_overrides
from solov2.infer.predictor import Predictor
from solov2.model import build_model
from solov2.presets import get_config

TINY = [
    "model.head.num_grids=[12,10,8,6,4]",
    "model.fpn_channels=32",
    "model.head.in_channels=32",
    "model.head.seg_feat_channels=32",
    "model.head.kernel_channels=32",
    "model.head.stacked_convs=1",
    "model.mask_feat.mid_channels=32",
    "data.test_scale=[96,64]",
    "model.test.nms_pre=60",
    "model.test.max_per_img=8",
]
N_IMAGES = 1000
WARMUP = 200


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    cfg = apply_overrides(get_config("solov2_demo"), TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # prior 0.5 instead of 0.01: plenty of candidates on every image
        for name, p in model.named_parameters():
            if "cate" in name and name.endswith("bias") and p.numel() == cfg.model.num_classes:
                p.zero_()
    return Predictor(model, cfg, device="cpu", score_thr=0.05, batch_size=4)


def test_predictor_soak_memory_flat(predictor: Predictor, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(8):
        h, w = (int(v) for v in rng.integers(32, 97, 2))
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        files.append(str(p))

    def make(kind: int) -> object:
        if kind == 3:
            return files[int(rng.integers(len(files)))]
        h, w = (int(v) for v in rng.integers(32, 97, 2))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if kind == 0:
            return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        return arr if kind == 1 else Image.fromarray(arr)

    done = instances = 0
    base = None
    samples: list[int] = []
    t0 = time.perf_counter()
    while done < N_IMAGES:
        n = min(int(rng.integers(1, 5)), N_IMAGES - done)
        batch = [make(int(rng.integers(4))) for _ in range(n)]
        preds = predictor(batch)
        assert len(preds) == n
        for x, p in zip(batch, preds):
            if isinstance(x, str):
                continue
            hw = (
                tuple(x.shape[-2:])
                if isinstance(x, torch.Tensor)
                else (x.shape[:2] if isinstance(x, np.ndarray) else (x.height, x.width))
            )
            assert tuple(p.masks.shape[-2:]) == tuple(hw)
            instances += len(p)
        done += n
        del batch, preds
        if base is None and done >= WARMUP:
            gc.collect()
            base = rss_bytes()
        elif base is not None and done % 50 < n:
            samples.append(rss_bytes())
    gc.collect()
    samples.append(rss_bytes())
    elapsed = time.perf_counter() - t0
    assert base is not None
    peak = max(samples)
    print(
        f"soak: {N_IMAGES} images, {instances} instances in {elapsed:.1f} s; RSS after "
        f"warm-up {base / 2**20:.1f} MiB, max {peak / 2**20:.1f} MiB, final "
        f"{samples[-1] / 2**20:.1f} MiB"
    )
    assert instances > N_IMAGES  # the post-processing really ran
    assert peak <= base * 1.05, (base, samples)
    assert peak - base < 16 * 2**20, (base, samples)  # and no slow leak hidden in the 5%
