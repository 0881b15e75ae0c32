"""A dataset's statistics as a table, its ground truth drawn on its images, and a one-page
summary figure of its statistics.

The overlays reuse :mod:`solov2.data.draw` (the colours and mask drawing of ``solov2
infer``). The figure needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from ..structures import Instances, Predictions
from ..utils.fileio import safe_name
from .draw import draw_predictions, label_color, save_png
from .stats import DatasetStats

__all__ = ["draw_ground_truth", "format_stats", "save_ground_truth", "save_summary_figure"]


def draw_ground_truth(
    image: Tensor, instances: Instances, class_names: Sequence[str], captions: bool | None = None
) -> Tensor:
    """Masks and boxes of ``instances`` over ``image``: each class in its ``solov2 infer`` colour
    (a single-class dataset: each instance in its own colour).

    Args:
        image: uint8 ``[3, H, W]``.
        instances: ground truth in the same frame.
        class_names: name of each label.
        captions: class names on the boxes; default: only when the dataset has several classes
            (a single class's name on every box hides dense images).

    Returns:
        uint8 ``[3, H, W]``.
    """
    n = len(instances)
    many = len(class_names) > 1
    # one class: a colour per instance (touching objects stay apart), else per class
    keys = instances.labels if many else torch.arange(n)
    pred = Predictions(instances.mask_tensor.bool(), keys, torch.ones(n), instances.boxes.float())
    out = draw_predictions(image, pred, class_names, score_thr=0.0, boxes=False)
    if n == 0:
        return out
    show = many if captions is None else captions
    labels = instances.labels.tolist()
    colors = [label_color(int(k)) for k in keys.tolist()]
    names = [class_names[lb] if 0 <= lb < len(class_names) else f"class_{lb}" for lb in labels]
    b = instances.boxes.float()
    ok = [i for i in range(n) if b[i, 2] > b[i, 0] and b[i, 3] > b[i, 1]]
    if not ok:
        return out
    return draw_bounding_boxes(
        out,
        b[ok],
        labels=[names[i] for i in ok] if show else None,
        colors=[colors[i] for i in ok],
        width=1,
    )


def save_summary_figure(st: DatasetStats, path: str | os.PathLike[str]) -> Path | None:
    """Write ``labels.png``-like histograms: instances per image (with ``max_per_img``), object
    sizes at the training scale on a log axis with each level's scale range, instances per class
    and, per level, the share of instances that lose all their cells. Returns the path, or
    ``None`` when matplotlib is not installed."""
    try:  # optional extra (plot): imported only when a figure is drawn
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    counts = np.array(st.instances_per_image)
    a = ax[0, 0]
    a.hist(counts, bins=min(50, max(1, int(counts.max(initial=0)) + 1)), color="#4c72b0")
    a.axvline(st.max_per_img, color="#c44e52", ls="--", label=f"max_per_img {st.max_per_img}")
    a.set(title=f"instances per image ({st.images} images)", xlabel="instances", ylabel="images")
    a.legend()
    a = ax[0, 1]
    edges = np.array(st.size_bins)
    a.stairs(st.size_hist, edges, fill=True, color="#55a868")
    a.set_xscale("log")
    for lv in st.levels:
        lo, hi = lv.scale_range
        a.axvspan(
            lo,
            hi,
            ymin=0.9 - 0.08 * lv.level,
            ymax=0.96 - 0.08 * lv.level,
            alpha=0.5,
            color=np.array(label_color(lv.level)) / 255,
            label=f"level {lv.level} (S={lv.grid}) {lo}-{hi}",
        )
    a.set(
        title=f"sqrt(box area) at train scales {st.train_scales}",
        xlabel="px",
        ylabel="instances per epoch",
    )
    a.legend(fontsize=8, loc="center left")
    a = ax[1, 0]
    a.bar(range(len(st.class_names)), st.instances_per_class, color="#8172b2")
    a.set_xticks(
        range(len(st.class_names)),
        st.class_names,
        rotation=90 if len(st.class_names) > 8 else 0,
        fontsize=8 if len(st.class_names) > 20 else 10,
    )
    a.set(title="instances per class", ylabel="instances")
    a = ax[1, 1]
    x = [lv.level for lv in st.levels]
    a.bar(x, [lv.share for lv in st.levels], color="#4c72b0", label="share of instances")
    a.bar(
        x,
        [lv.lose_all_share * lv.share for lv in st.levels],
        color="#c44e52",
        label="...of which lose all cells",
    )
    a.set_xticks(x, [f"{lv.level}\nS={lv.grid}" for lv in st.levels])
    a.set(title="FPN levels", xlabel="level", ylabel="share of all instances")
    a.legend()
    fig.suptitle(f"{st.source} under {st.config}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_ground_truth(
    dataset: Any, indices: Sequence[int], output_dir: Path, class_names: Sequence[str]
) -> list[Path]:
    """Draw items ``indices`` of ``dataset`` (un-transformed samples) into ``output_dir``."""
    used: set[str] = set()
    written = []
    for i in indices:
        s = dataset[i]
        vis = draw_ground_truth(s.image, s.instances, class_names)
        written.append(save_png(vis, output_dir / safe_name(Path(s.file_name).stem, used)))
    return written


def _f(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"


def format_stats(st: DatasetStats) -> str:
    """The readable table of :class:`DatasetStats`."""
    pi, sz, ca = st.per_image, st.size_px, st.coco_areas
    dropped = ", ".join(f"{k} {v}" for k, v in st.dropped.items()) or "none"
    sample = f" (measured {st.images} of {st.images_total})" if st.images < st.images_total else ""
    lines = [
        f"dataset {st.source}: {st.images_total} images{sample}, {st.instances} instances, "
        f"{len(st.class_names)} class{'es' if len(st.class_names) != 1 else ''} (skipped: {dropped})",
        f"config {st.config}: train scales {st.train_scales}"
        + (" (averaged over the scales; counts per epoch)" if len(st.train_scales) > 1 else ""),
        f"instances per image: mean {pi['mean']:.1f}, median {pi['median']:g}, max {pi['max']}, "
        f"min {pi['min']}",
        f"object size sqrt(box area) at the training scale, px: p5 {sz['p5']:.0f}, p25 "
        f"{sz['p25']:.0f}, median {sz['median']:.0f}, p75 {sz['p75']:.0f}, p95 {sz['p95']:.0f}, "
        f"max {sz['max']:.0f}",
        f"COCO areas (original size): small {ca['small']:.1%}, medium {ca['medium']:.1%}, "
        f"large {ca['large']:.1%}",
        "",
        f"{'level':>5} {'range px':>10} {'grid':>5} {'cell px':>10} {'instances':>10} "
        f"{'share':>6} {'size in cells p10/med/p90':>26} {'cells/inst':>10} {'lose all':>9} "
        f"{'(share)':>7} {'lose some':>9}",
    ]
    for lv in st.levels:
        rng = f"{lv.scale_range[0]}-{lv.scale_range[1]}"
        cell = f"{lv.cell_px[0]:.0f}x{lv.cell_px[1]:.0f}"
        sic = "/".join(f"{v:.2f}" for v in lv.size_in_cells) if lv.instances else "-"
        lines.append(
            f"{lv.level:>5} {rng:>10} {lv.grid:>5} {cell:>10} {_f(lv.instances):>10} "
            f"{lv.share:>6.1%} {sic:>26} {lv.cells_per_instance:>10.2f} {_f(lv.lose_all):>9} "
            f"{lv.lose_all_share:>7.1%} {_f(lv.lose_some):>9}"
        )
    un = st.unassigned
    lines += [
        "",
        f"in no level: {_f(un['total'])} (too small {_f(un['too_small'])}, too large "
        f"{_f(un['too_large'])}, between ranges {_f(un['between'])}); vanished in the resize: "
        f"{_f(st.vanished)}",
        f"model.test.max_per_img {st.max_per_img}: {st.images_over_max} images exceed it, "
        f"{st.instances_over_max} instances beyond it",
    ]
    lines += [f"warning: {w}" for w in st.warnings] or ["no warnings: the config fits the data"]
    return "\n".join(lines)
