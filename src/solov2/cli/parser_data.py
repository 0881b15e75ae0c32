"""The dataset flags of the command line: ``--data-root``/``--split``, ``--annotations FILE
--images DIR`` and the per-split paths of ``train``, ``eval`` and ``bench``; ``solov2 data
stats|show`` (argparse only, no torch import)."""

from __future__ import annotations

import argparse
from typing import Any

from .args import NONNEG_INT

__all__ = ["add_data", "add_data_args"]


def add_data_args(p: argparse.ArgumentParser, train: bool) -> None:
    """Where a command's data is (``train``: the training set's flags too); ``--annotations
    --images`` name the training set of ``train`` and the evaluated set of ``eval``."""
    g = p.add_argument_group("data")
    g.add_argument(
        "--data-root",
        help="COCO-layout root: annotations/instances_{split}.json and {split}/ image folders",
    )
    if train:
        g.add_argument("--train-split", help="training split name (default train2017)")
        g.add_argument("--train-json", help="training annotation file (overrides --data-root)")
        g.add_argument("--train-images", help="training image folder")
    g.add_argument(
        "--val-split", "--split", dest="val_split", help="evaluation split name (default val2017)"
    )
    g.add_argument("--val-json", help="evaluation annotation file")
    g.add_argument("--val-images", help="evaluation image folder")
    which = "training" if train else "evaluation"
    g.add_argument(
        "--annotations",
        metavar="FILE",
        help=f"the {which} set's COCO annotation file, with --images "
        f"(as in solov2 data stats; = --{'train' if train else 'val'}-json)",
    )
    g.add_argument(
        "--images", metavar="DIR", help=f"the {which} set's image folder, with --annotations"
    )
    g.add_argument("--workers", type=NONNEG_INT, help="data loader workers per process")


def add_data(sub: Any) -> None:
    """``solov2 data stats`` and ``solov2 data show``."""
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
        p.add_argument(
            "--annotations",
            metavar="FILE",
            help="annotation file, with --images (instead of --data-root/--split)",
        )
        p.add_argument("--images", metavar="DIR", help="image folder, with --annotations")
        p.add_argument("opts", nargs="*", metavar="a.b=value", help="config overrides")
    st.add_argument("--max-images", type=int, help="measure this many images, evenly spaced")
    st.add_argument("--json", metavar="FILE", help="also write the statistics as JSON")
    sh.add_argument(
        "--max-images",
        type=int,
        help="labels.png's statistics over this many images, evenly spaced (default: all)",
    )
    sh.add_argument("--output-dir", required=True, help="where the drawings go")
    sh.add_argument("--num", type=int, default=16, help="images to draw (the first N; 0: all)")
