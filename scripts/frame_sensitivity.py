#!/usr/bin/env python3
"""How much a SOLOv2 model's output depends on the padded frame.

SOLOv2's grid cells and coordinate features span the padded input. This evaluates one checkpoint
on a split with every image zero-padded by extra pixels at the bottom/right (``image_sizes``
unchanged, so post-processing keeps the same valid region) and prints the segm AP per padding.

Usage (after ``solov2 demo``; 1-2 minutes on 2 CPU cores)::

    PYTHONPATH=src python3 scripts/frame_sensitivity.py output/demo/train/model_final.pth \\
        output/demo/data
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import solov2.engine.evaluate as ev  # noqa: E402
from solov2.data.loader import build_test_loader, dataset_from_config  # noqa: E402
from solov2.engine.run import load_model_for_eval  # noqa: E402

PADDINGS = [(0, 0), (32, 0), (0, 32), (64, 64), (128, 128)]  # (bottom, right) px


class _Padded:
    """The loader's batches with ``(bottom, right)`` more zero pixels."""

    def __init__(self, loader: Any, bottom: int, right: int) -> None:
        self.loader, self.pad = loader, (0, right, 0, bottom)

    def __iter__(self) -> Iterator[Any]:
        for b in self.loader:
            yield dataclasses.replace(b, images=F.pad(b.images, self.pad))

    def __len__(self) -> int:
        return len(self.loader)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("data_root", help="COCO layout: annotations/instances_{split}.json, {split}/")
    p.add_argument("--split", default="val")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    model, cfg = load_model_for_eval(args.checkpoint, None, device)
    cfg.data.data_root, cfg.data.val_split = args.data_root, args.split
    dataset = dataset_from_config(cfg.data, "val", train=False)
    own = ev.padded_size
    for bottom, right in PADDINGS:
        # predict_batch crops each image to its own padded size: make that size the larger one
        ev.padded_size = lambda h, w, d, b=bottom, r=right: (own(h, w, d)[0] + b,  # type: ignore
                                                             own(h, w, d)[1] + r)
        try:
            loader = build_test_loader(dataset, 8, 0, size_divisor=cfg.data.size_divisor,
                                       test_scale=cfg.data.test_scale)
            m = ev.evaluate(model, _Padded(loader, bottom, right), dataset, cfg, device,
                            progress=False)
        finally:
            ev.padded_size = own
        print(f"padding +{bottom} px bottom, +{right} px right: segm AP {m['segm']['AP']:.1f} "
              f"(AP50 {m['segm']['AP50']:.1f})", flush=True)


if __name__ == "__main__":
    main()
