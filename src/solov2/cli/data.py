"""``solov2 data stats`` and ``solov2 data show``: look at a dataset before training on it.

``stats`` prints :func:`solov2.data.stats.dataset_stats` as a table (``--json FILE`` writes it
for machines); ``show`` draws the ground truth of some images and a summary figure.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:  # the parser is built before torch is imported
    from ..config import Config
    from .stats import DatasetStats

__all__ = ["add_data_parser", "format_stats", "run_data"]

logger = logging.getLogger("solov2")


def add_data_parser(sub: Any) -> None:
    """Register ``data stats`` and ``data show`` on the CLI's subparsers."""
    d = sub.add_parser(
        "data", help="dataset inspection: statistics against a preset, drawn ground truth"
    )
    dsub = d.add_subparsers(dest="data_command", required=True)
    st = dsub.add_parser(
        "stats",
        help="instances per image, object sizes at the training "
        "scale, fit to the preset's FPN levels and grids (cell collisions)",
    )
    sh = dsub.add_parser("show", help="draw the ground truth of N images + labels.png summary")
    for p in (st, sh):
        p.add_argument(
            "--config",
            default="solov2_r50_fpn_1x",
            help="preset or YAML whose scales, levels and grids to check "
            "(default solov2_r50_fpn_1x)",
        )
        p.add_argument(
            "--data-root", help="COCO-layout root: annotations/instances_{split}.json and {split}/"
        )
        p.add_argument("--split", help="split name (default: the config's data.train_split)")
        p.add_argument("--annotations", help="annotation file (instead of --data-root/--split)")
        p.add_argument("--images", help="image folder (instead of --data-root/--split)")
        p.add_argument("--max-images", type=int, help="measure this many images, evenly spaced")
        p.add_argument("opts", nargs="*", metavar="a.b=value", help="config overrides")
    st.add_argument("--json", metavar="FILE", help="also write the statistics as JSON")
    sh.add_argument("--output-dir", required=True)
    sh.add_argument("--num", type=int, default=16, help="images to draw (the first N; 0: all)")


def _dataset(args: argparse.Namespace, cfg: Config) -> Any:
    from .coco import CocoInstances
    from .loader import dataset_from_config

    d = cfg.data
    if args.split:
        d.train_split = args.split
    if args.annotations or args.images:
        if not (args.annotations and args.images):
            raise UserError("--annotations and --images go together")
        d.train_json, d.train_images = args.annotations, args.images
    elif not d.data_root:
        raise UserError("give --data-root (with --split) or --annotations and --images")
    ds: CocoInstances = dataset_from_config(d, "train", train=True)
    ds.transform = None
    return ds


def _cfg(args: argparse.Namespace) -> Config:
    from ..config import apply_overrides
    from ..presets import get_config

    cfg = get_config(args.config)
    if args.data_root:
        cfg.data.data_root = args.data_root
    cfg = apply_overrides(cfg, list(args.opts or []))
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images}: must be >= 1")
    return cfg


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


def _stats(args: argparse.Namespace) -> int:
    from ..engine.checkpoint import atomic_write_text
    from .stats import dataset_stats

    cfg = _cfg(args)
    st = dataset_stats(_dataset(args, cfg), cfg, args.max_images)
    print(format_stats(st), flush=True)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(st.to_dict(), indent=1))
        print(f"wrote {args.json}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .show import save_ground_truth, save_summary_figure
    from .stats import dataset_stats

    if args.num < 0:
        raise UserError(f"--num {args.num}: must be >= 0 (0: all images)")
    cfg = _cfg(args)
    ds = _dataset(args, cfg)
    out = Path(args.output_dir)
    n = len(ds) if args.num == 0 else min(args.num, len(ds))
    written = save_ground_truth(ds, range(n), out, ds.class_names)
    print(f"drew the ground truth of {len(written)} images into {out}")
    fig = save_summary_figure(dataset_stats(ds, cfg, args.max_images), out / "labels.png")
    print(
        f"wrote {fig}"
        if fig
        else "labels.png skipped: matplotlib is not installed (pip install 'solov2[plot]')"
    )
    return 0


def run_data(args: argparse.Namespace) -> int:
    """``solov2 data {stats,show}``."""
    return _stats(args) if args.data_command == "stats" else _show(args)
