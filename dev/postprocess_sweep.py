#!/usr/bin/env python3
"""Post-processing variants of one trained model on a val split, on the CPU.

The network runs once per image (its raw outputs are kept); each variant then re-runs only
the post-processing with ``model.test.*`` overrides and is scored with COCO AP. What
docs/RESULTS.md section 4 used to weigh test-time settings (points NMS, Matrix NMS kernel and
sigma, thresholds) on the weights of a GPU sweep (``dense_sweep.py --save-models``)::

    PYTHONPATH=src python3 dev/postprocess_sweep.py runs/b500/dense shared/datasets/bbbc039 \\
        --variant nopnms:model.test.points_nms=false \\
        --variant sig1:model.test.points_nms=false,model.test.sigma=1.0

``WEIGHTS`` is a checkpoint (anything ``solov2 eval --checkpoint`` takes) or the stem of the
two halves ``dense_sweep.py --save-models`` writes (``STEM.0.pth``, ``STEM.1.pth``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from solov2.config import Config, apply_overrides, config_from_dict
from solov2.data.loader import build_test_loader, dataset_from_config
from solov2.evaluation.coco_eval import CocoEvaluator
from solov2.infer.loading import load_for_inference
from solov2.model import SOLOv2, build_model
from solov2.postprocess import PostProcessor


def load(weights: str) -> tuple[SOLOv2, Config]:
    halves = [Path(f"{weights}.{i}.pth") for i in (0, 1)]
    if not all(p.is_file() for p in halves):
        return load_for_inference(weights)
    parts = [torch.load(p, weights_only=True) for p in halves]
    cfg = config_from_dict(parts[0]["config"])
    model = build_model(cfg)
    state = {**parts[0]["model"], **parts[1]["model"]}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model, cfg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights")
    p.add_argument("data_root")
    p.add_argument("--split", default="val")
    p.add_argument("--max-dets", type=int, default=300)
    p.add_argument("--variant", action="append", default=[], metavar="NAME:k=v,k=v")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg = load(a.weights)
    model.eval()
    cfg.data.data_root, cfg.data.val_split = a.data_root, a.split
    ds = dataset_from_config(cfg.data, "val", train=False)
    loader = build_test_loader(ds, 1, 0, size_divisor=32, test_scale=cfg.data.test_scale)
    t0 = time.time()
    with torch.inference_mode():
        cache = [(b, model(b.images, b.image_sizes)) for b in loader]
    print(f"network on {len(cache)} images: {time.time() - t0:.0f} s", flush=True)
    cap = [f"model.test.max_per_img={a.max_dets}"]
    for text in ["base:", *a.variant]:
        name, _, rest = text.partition(":")
        c = apply_overrides(cfg, cap + [x for x in rest.split(",") if x])
        post = PostProcessor.from_config(c)
        ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names, max_dets=a.max_dets)
        t0 = time.time()
        with torch.inference_mode():
            for b, out in cache:
                ev.process(b.image_ids, post(out, b.image_sizes, b.orig_sizes))
        m = ev.evaluate()
        s = m["segm"]
        print(
            f"{name:>12}: segm AP {s['AP']:.1f}  AP50 {s['AP50']:.1f}  AP75 {s['AP75']:.1f}  "
            f"detections {m['num_detections']}  ({time.time() - t0:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
