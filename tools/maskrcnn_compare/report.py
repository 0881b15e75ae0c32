"""What a comparison leaves behind: the loss curves, the overlays (ground truth | ours | peer)
and the AP table printed at the end and stored in ``compare.json``."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import nn

from solov2.config import Config
from solov2.data.coco import CocoInstances
from solov2.data.io import read_image
from solov2.data.loader import collate
from solov2.evaluation.evaluate import predict_batch
from solov2.structures import Predictions

from .loop import Trainee
from .models import peer_predict


def plot_curves(ours: Trainee, peer: Trainee, path: Path, labels: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, t, label in zip(axes, (ours, peer), labels):
        xs = list(range(1, len(t.losses) + 1))
        ys = [float("nan") if v is None else v for v in t.losses]
        ax.plot(xs, ys, lw=0.8, alpha=0.5, label="total loss")
        k = max(1, len(ys) // 50)
        if k > 1:
            sm = [
                statistics.fmean([y for y in ys[max(0, i - k + 1) : i + 1] if y == y] or [0.0])
                for i in range(len(ys))
            ]
            ax.plot(xs, sm, lw=1.6, label=f"moving mean ({k})")
        for name, vals in t.terms.items():
            ax.plot(
                xs, [float("nan") if v is None else v for v in vals], lw=0.6, alpha=0.35, label=name
            )
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overlays(
    ours_model: nn.Module,
    peer_model: nn.Module,
    cfg: Config,
    val_set: CocoInstances,
    device: torch.device,
    amp: str,
    n: int,
    path: Path,
    labels: tuple[str, str],
) -> list[int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from solov2.data.draw import draw_predictions

    raw = CocoInstances(val_set.json_path, val_set.image_dir, None, train=False)
    coco = val_set.coco
    idx = [
        i for i, iid in enumerate(val_set.image_ids) if coco.getAnnIds(imgIds=[iid], iscrowd=False)
    ][:n] or [0]
    batch = collate(
        [val_set[i] for i in idx], size_divisor=cfg.data.size_divisor, with_targets=False
    )
    was = ours_model.training
    ours_model.eval()
    ours_preds = predict_batch(ours_model, batch, cfg, device, amp)
    ours_model.train(was)
    was = peer_model.training
    peer_model.eval()
    peer_preds = peer_predict(peer_model, batch, device, amp)
    peer_model.train(was)
    names = val_set.class_names
    fig, axes = plt.subplots(len(idx), 3, figsize=(15, 4.2 * len(idx)), squeeze=False)
    for row, i in enumerate(idx):
        sample = raw[i]
        image = read_image(raw.image_path(i))
        inst = sample.instances
        gt = Predictions(inst.masks.bool(), inst.labels, torch.ones(len(inst)), inst.boxes)
        panels = [
            draw_predictions(image, gt, names, score_thr=0.0),
            draw_predictions(image, ours_preds[row].to("cpu"), names, score_thr=0.3),
            draw_predictions(image, peer_preds[row].to("cpu"), names, score_thr=0.3),
        ]
        for col, (img, title) in enumerate(zip(panels, ("ground truth", *labels))):
            ax = axes[row][col]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(
                f"{title} (image {sample.image_id})" if col == 0 else f"{title} (score >= 0.3)",
                fontsize=9,
            )
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [int(val_set.image_ids[i]) for i in idx]


def _m(metrics: dict[str, Any] | None, task: str, key: str) -> float | None:
    if not metrics:
        return None
    v = metrics.get(task, {}).get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def format_report(rows: list[dict[str, Any]], eval_train: bool) -> str:
    cols = [
        "model",
        "params(M)",
        "iters",
        "train s",
        "img/s",
        "val segm AP",
        "AP50",
        "AP75",
        "val bbox AP",
    ]
    if eval_train:
        cols += ["train segm AP", "train bbox AP"]

    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    table = [cols]
    for r in rows:
        v, tr = r["val"], r.get("train_eval")
        line = [
            r["model"],
            f(r["params"] / 1e6, 2),
            f(r["iters"]),
            f(r["train_s"], 1),
            f(r["img_per_s"], 2),
            f(_m(v, "segm", "AP")),
            f(_m(v, "segm", "AP50")),
            f(_m(v, "segm", "AP75")),
            f(_m(v, "bbox", "AP")),
        ]
        if eval_train:
            line += [f(_m(tr, "segm", "AP")), f(_m(tr, "bbox", "AP"))]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    out = []
    for j, row in enumerate(table):
        out.append(
            " | ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            )
        )
        if j == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)
