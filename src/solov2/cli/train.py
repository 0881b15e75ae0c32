"""``solov2 train``: resolve the config from the flags, train it (:mod:`solov2.train.run`)."""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..train.profile import parse_span
from ..train.run import TrainOptions, run_training
from .config import resolved_config, resume_dir
from .weights import weights_arg

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    cfg = resolved_config(args)
    out = args.output_dir or resume_dir(args) or os.path.join("output", cfg.name)
    try:
        span = parse_span(args.profile) if args.profile else None
    except ValueError as e:
        raise UserError(str(e)) from None
    opts = TrainOptions(
        out,
        init=weights_arg(args.init),
        init_allow_partial=args.init_allow_partial,
        resume=args.resume,
        channels_last=args.channels_last,
        compile=args.compile,
        eval_at_end=not (args.no_eval or args.throughput),
        sync_bn=args.sync_bn,
        profile=span,
        overwrite=args.overwrite,
    )
    metrics = run_training(cfg, opts, device=args.device, auto_scale_data=args.auto_scale)
    if args.throughput and metrics.get("img_per_s"):
        print(f"steady-state throughput: {metrics['img_per_s']:.2f} img/s")
    return 0
