"""``solov2 export``: a checkpoint to ONNX (:mod:`solov2.infer.export`)."""

from __future__ import annotations

import argparse

from ..infer import export
from ..infer.loading import load_for_inference
from .weights import weights_arg

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    checkpoint = weights_arg(args.checkpoint)
    assert checkpoint is not None  # --checkpoint is required
    model, cfg = load_for_inference(checkpoint, args.config, overrides=args.opts)
    path = export.export_onnx(model, args.output, config=cfg, score_thr=args.score_thr)
    print(f"exported {path}")
    return 0
