#!/usr/bin/env python3
"""Per-image view of an overfit run (``dev/overfit.py``): which images and which loss fail.

For every training image of the run: its segm AP alone (pycocotools on the run's saved
detections, ``imgIds=[id]``), its loss components (``loss_cate``, ``loss_mask``) computed alone in
its own padded frame, and the same computed inside the canvas of all the images of its
orientation batched together (the frame the aspect-grouped sampler trains it in). The model runs in
eval mode (frozen BatchNorm / GroupNorm: an image's outputs do not depend on its batch-mates).

Usage::

    PYTHONPATH=src python3 dev/overfit_diagnose.py runs/overfit [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.checkpoint import find_resume  # noqa: E402
from solov2.config import Config  # noqa: E402
from solov2.data.loader import collate, dataset_from_config  # noqa: E402
from solov2.infer.loading import load_for_inference  # noqa: E402
from solov2.structures import Batch  # noqa: E402
from solov2.train.step import train_step  # noqa: E402


def per_image_ap(gt_json: Path, results_json: Path) -> dict[int, tuple[float, int]]:
    """``{image_id: (segm AP in %, number of non-crowd GT instances)}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        res = json.loads(results_json.read_text())
        dt = gt.loadRes(res) if res else None
    out: dict[int, tuple[float, int]] = {}
    for img_id in gt.getImgIds():
        n = len(gt.getAnnIds(imgIds=[img_id], iscrowd=False))
        if dt is None:
            out[img_id] = (0.0, n)
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            e = COCOeval(gt, dt, "segm")
            e.params.imgIds = [img_id]
            e.evaluate()
            e.accumulate()
            e.summarize()
        out[img_id] = (max(float(e.stats[0]), 0.0) * 100, n)
    return out


def losses(model: torch.nn.Module, batch: Batch, cfg: Config, device: torch.device) -> list[dict]:
    """Loss components of each image of ``batch``, in the batch's padded frame."""
    batch = batch.to(device)
    rows = []
    with torch.no_grad():
        for i in range(len(batch.image_ids)):
            one = Batch(
                images=batch.images[i : i + 1],
                image_sizes=batch.image_sizes[i : i + 1],
                orig_sizes=batch.orig_sizes[i : i + 1],
                image_ids=batch.image_ids[i : i + 1],
                targets=batch.targets[i : i + 1] if batch.targets else None,
            )
            rows.append({k: float(v) for k, v in train_step(model, one, cfg, "none").items()})
    return rows


def diagnose(run_dir: str | Path, device: torch.device) -> tuple[Path, list[dict]]:
    """Checkpoint used and one row per training image: ``image_id``, ``size`` ``(h, w)``,
    ``canvas`` ``(Hp, Wp)``, ``instances``, ``ap`` (nan without saved detections) and
    ``alone`` / ``canvas_losses`` (``{"loss_cate", "loss_mask"}``)."""
    run = Path(run_dir)
    ckpt = find_resume(run)
    if ckpt is None:
        raise SystemExit(f"{run}: no checkpoint")
    model, cfg = load_for_inference(str(ckpt), keep_classes=True)
    model = model.to(device).eval()
    dataset = dataset_from_config(cfg.data, "train", train=True)  # fixed scale, no flip
    samples = [dataset[i] for i in range(len(dataset))]
    results = sorted(run.rglob("coco_instances_results.json"))
    ap = per_image_ap(Path(cfg.data.train_json), results[-1]) if results else {}

    in_canvas: dict[int, tuple[dict, tuple[int, int]]] = {}
    for portrait in (False, True):
        group = [s for s in samples if (s.image.shape[-2] > s.image.shape[-1]) == portrait]
        if group:
            b = collate(group, cfg.data.size_divisor)
            for s, row in zip(group, losses(model, b, cfg, device)):
                in_canvas[s.image_id] = (row, tuple(b.images.shape[-2:]))
    rows = []
    for s in samples:
        alone = losses(model, collate([s], cfg.data.size_divisor), cfg, device)[0]
        canvas_losses, canvas = in_canvas[s.image_id]
        ap_i, n = ap.get(s.image_id, (float("nan"), len(s.instances)))
        rows.append(
            {
                "image_id": s.image_id,
                "size": tuple(s.image.shape[-2:]),
                "canvas": canvas,
                "instances": n,
                "ap": ap_i,
                "alone": alone,
                "canvas_losses": canvas_losses,
            }
        )
    return ckpt, rows


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="the --output-dir of dev/overfit.py")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    ckpt, rows = diagnose(args.run_dir, torch.device(args.device))
    print(f"checkpoint {ckpt}")
    print(
        "| image | h x w (canvas) | instances | segm AP | cate alone / canvas "
        "| mask alone / canvas |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        (h, w), (hc, wc), a, c = r["size"], r["canvas"], r["alone"], r["canvas_losses"]
        print(
            f"| {r['image_id']} | {h}x{w} ({hc}x{wc}) | {r['instances']} | {r['ap']:.1f} "
            f"| {a['loss_cate']:.3f} / {c['loss_cate']:.3f} "
            f"| {a['loss_mask']:.3f} / {c['loss_mask']:.3f} |"
        )
    return rows


if __name__ == "__main__":
    main()
