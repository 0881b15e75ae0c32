"""``solov2 data stats`` and ``solov2 data show``: look at a dataset before training on it.

``stats`` prints :func:`solov2.data.stats.dataset_stats` as a table (``--json FILE`` writes it
for machines); ``show`` draws the ground truth of some images and a summary figure.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ..config import Config, apply_overrides
from ..data.coco import CocoInstances
from ..data.loader import dataset_from_config
from ..data.show import format_stats, save_ground_truth, save_summary_figure
from ..data.stats import dataset_stats
from ..errors import UserError
from ..presets import get_config
from ..utils.fileio import atomic_write_text

__all__ = ["run"]

logger = logging.getLogger("solov2")


def _dataset(args: argparse.Namespace, cfg: Config) -> Any:
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
    ds.verify_images()  # missing files: skipped (and named) as training would skip them
    return ds


def _cfg(args: argparse.Namespace) -> Config:
    cfg = get_config(args.config)
    if args.data_root:
        cfg.data.data_root = args.data_root
    cfg = apply_overrides(cfg, list(args.opts or []))
    if args.max_images is not None and args.max_images < 1:
        raise UserError(f"--max-images {args.max_images}: must be >= 1")
    return cfg


def _stats(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    st = dataset_stats(_dataset(args, cfg), cfg, args.max_images)
    print(format_stats(st), flush=True)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(st.to_dict(), indent=1))
        print(f"wrote {args.json}")
    return 0


def _show(args: argparse.Namespace) -> int:
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


def run(args: argparse.Namespace) -> int:
    """``solov2 data {stats,show}``."""
    return _stats(args) if args.data_command == "stats" else _show(args)
