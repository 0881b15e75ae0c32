"""A dataset's statistics as a table, its ground truth drawn on its images, and a one-page
summary figure of its statistics.

The overlays reuse :mod:`solov2.data.draw` (the colours and mask drawing of ``solov2
infer``). The figure needs matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import os
import textwrap
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
from .recommend import ScaleRecommendation
from .stats import DatasetStats

__all__ = [
    "draw_ground_truth",
    "format_stats",
    "save_ground_truth",
    "save_summary_figure",
    "summary_figure",
]


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


def _scales_text(scales: Sequence[Sequence[int]]) -> str:
    """``768x(352-512)`` for a ladder of one long side, else ``LxS, LxS, ...``."""
    longs, shorts = {max(s) for s in scales}, sorted(min(s) for s in scales)
    if len(longs) == 1 and len(shorts) > 1:
        return f"{longs.pop()}x({shorts[0]}-{shorts[-1]})"
    return ", ".join(f"{max(s)}x{min(s)}" for s in scales)


def save_summary_figure(st: DatasetStats, path: str | os.PathLike[str]) -> Path | None:
    """Write :func:`summary_figure` to ``path``. Returns the path, or ``None`` when matplotlib
    is not installed."""
    fig = summary_figure(st)
    if fig is None:
        return None
    import matplotlib.pyplot as plt  # present: summary_figure drew with it

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_figure(st: DatasetStats) -> Any:
    """``labels.png``-like histograms: instances per image (with ``max_per_img``), object
    sizes at the training scale on a log axis with each level's scale range, instances per class
    and, per level, the share of instances that lose all their cells. Long titles (a deep
    annotation path) wrap; the constrained layout keeps every title inside the figure. Returns
    the matplotlib figure (close it), or ``None`` when matplotlib is not installed."""
    try:  # optional extra (plot): imported only when a figure is drawn
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
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
        title=textwrap.fill(
            f"sqrt(box area) at the training scales {_scales_text(st.train_scales)}", 60
        ),
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
    fig.suptitle(textwrap.fill(f"{st.source} under {st.config}", 110, break_on_hyphens=False))
    return fig


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


def _skipped_line(st: DatasetStats, shown: int = 3) -> str:
    """The images left out, the first ``shown`` named, then how many more."""
    names = st.skipped_images
    if not names:
        return "skipped images: none"
    more = f"; and {len(names) - shown} more" if len(names) > shown else ""
    return f"skipped images: {len(names)} ({'; '.join(names[:shown])}{more})"


def _scale_section(rec: ScaleRecommendation | None) -> list[str]:
    """``DatasetStats.recommended`` side by side with the config's test scale, its reasons and
    the overrides to paste."""
    if rec is None:
        return ["scale: no objects to measure"]
    checks = [rec.current] + ([rec.recommended] if rec.overrides else [])
    tags = ["current", "recommended"]
    head = [f"{t} {c.test_scale[0]}x{c.test_scale[1]}" for t, c in zip(tags, checks)]
    rows = [
        ("object size p10 / median / p90, px", lambda c: "{p10:.0f} / {median:.0f} / "
         "{p90:.0f}".format(**c.size_px)),
        ("masks too small to keep", lambda c: f"{c.invisible:.1%}"),
        ("centre cell shared with another object", lambda c: f"{c.collide:.1%}"),
        ("same-class centre up/left/up-left (points NMS)",
         lambda c: "off" if c.nms_adjacent is None else f"{c.nms_adjacent:.1%}"),
        ("in no level's scale range", lambda c: f"{c.outside:.1%}"),
        ("largest image side, px (upscale)", lambda c: f"{c.max_side} ({c.max_upscale:g}x)"),
    ]  # fmt: skip
    name_w = max(len(r[0]) for r in rows)
    widths = [max(len(h), *(len(fn(c)) for _, fn in rows)) for h, c in zip(head, checks)]
    lines = [
        "scale check at the test scale (object sizes and centres scaled from the annotations):",
        " " * name_w + "".join(f"  {h:>{w}}" for h, w in zip(head, widths)),
    ]
    for name, fn in rows:
        lines.append(
            name.ljust(name_w) + "".join(f"  {fn(c):>{w}}" for c, w in zip(checks, widths))
        )
    lines += [f"  {r}" for r in rec.reasons]
    if rec.overrides:
        lines += [
            f"recommended: train and test at x{rec.factor:g} (paste after the command; solov2 "
            "train --auto-scale applies them):",
            "  " + " ".join(rec.overrides),
        ]
    else:
        lines.append("recommended: keep the config's scales")
    return lines


def format_stats(st: DatasetStats) -> str:
    """The readable table of :class:`DatasetStats`. With several training scales the per-level
    counts are means over the scales (each image trains at one scale per epoch: the expected
    count per epoch), marked ``*``."""
    pi, sz, ca = st.per_image, st.size_px, st.coco_areas
    dropped = ", ".join(f"{k} {v}" for k, v in st.dropped.items()) or "none"
    sample = f" (measured {st.images} of {st.images_total})" if st.images < st.images_total else ""
    k = len(st.train_scales)
    m = "*" if k > 1 else ""
    lines = [
        f"dataset {st.source}: {st.images_total} images{sample}, {st.instances} instances, "
        f"{len(st.class_names)} class{'es' if len(st.class_names) != 1 else ''} (skipped: {dropped})",
        _skipped_line(st),
        f"config {st.config}: train scales {st.train_scales}",
        f"instances per image: mean {pi['mean']:.1f}, median {pi['median']:g}, max {pi['max']}, "
        f"min {pi['min']}",
        f"object size sqrt(box area) at the training scale{'s (all pooled)' if m else ''}, px: "
        f"p5 {sz['p5']:.0f}, p25 {sz['p25']:.0f}, median {sz['median']:.0f}, p75 "
        f"{sz['p75']:.0f}, p95 {sz['p95']:.0f}, max {sz['max']:.0f}",
        f"COCO areas (original size): small {ca['small']:.1%}, medium {ca['medium']:.1%}, "
        f"large {ca['large']:.1%}",
        "",
        f"{'level':>5} {'range px':>10} {'grid':>5} {'cell px':>10} {'instances' + m:>11} "
        f"{'share':>6} {'size in cells p10/med/p90':>26} {'cells/inst':>10} "
        f"{'lose all' + m:>10} {'(share)':>7} {'lose some' + m:>10}",
    ]
    for lv in st.levels:
        rng = f"{lv.scale_range[0]}-{lv.scale_range[1]}"
        cell = f"{lv.cell_px[0]:.0f}x{lv.cell_px[1]:.0f}"
        sic = "/".join(f"{v:.2f}" for v in lv.size_in_cells) if lv.instances else "-"
        lines.append(
            f"{lv.level:>5} {rng:>10} {lv.grid:>5} {cell:>10} {_f(lv.instances):>11} "
            f"{lv.share:>6.1%} {sic:>26} {lv.cells_per_instance:>10.2f} {_f(lv.lose_all):>10} "
            f"{lv.lose_all_share:>7.1%} {_f(lv.lose_some):>10}"
        )
    un = st.unassigned
    if m:
        lines.append(
            f"* mean over the {k} training scales: each image trains at one of them per epoch, "
            "so these are expected counts per epoch (hence fractions)"
        )
    lines += [
        "",
        f"in no level{m}: {_f(un['total'])} (too small {_f(un['too_small'])}, too large "
        f"{_f(un['too_large'])}, between ranges {_f(un['between'])}); vanished in the "
        f"resize{m}: {_f(st.vanished)}",
        f"model.test.max_per_img {st.max_per_img}: {st.images_over_max} images exceed it, "
        f"{st.instances_over_max} instances beyond it",
        "",
        *_scale_section(st.recommended),
        "",
    ]
    lines += [f"warning: {w}" for w in st.warnings] or ["no warnings: the config fits the data"]
    return "\n".join(lines)
