"""``solov2 convert``: an official SOLO / mmdetection 3.x checkpoint to ours."""

from __future__ import annotations

import argparse

from ..convert import convert_checkpoint
from .config import resolved_config

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    report = convert_checkpoint(args.src, args.dst, resolved_config(args), source=args.source)
    print(report)
    return 0
