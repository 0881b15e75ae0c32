"""``solov2 demo``: the bundled end-to-end job: synthetic data, train ``solov2_demo``, evaluate,
overlays."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..config import apply_overrides
from ..data.synthetic import make_synthetic_coco
from ..presets import get_config
from ..runtime.dist import is_main_process
from ..train.run import TrainOptions, run_training
from .infer import run_infer

__all__ = ["run", "run_demo"]


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    metrics = run_demo(
        args.output_dir,
        device=args.device,
        num_train=args.num_train,
        num_val=args.num_val,
        overrides=args.opts,
    )
    ap = metrics.get("segm", {}).get("AP", float("nan"))
    print(
        f"demo finished in {time.perf_counter() - t0:.0f} s: segm AP {ap:.1f} "
        f"(outputs in {args.output_dir})"
    )
    return 0


def run_demo(
    output_dir: str,
    *,
    device: str = "auto",
    num_train: int = 300,
    num_val: int = 60,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Synthetic data in ``output_dir/data`` (kept when there), ``solov2_demo`` trained into
    ``output_dir/train`` and evaluated, overlays of 8 validation images in ``output_dir/vis``."""
    out = Path(output_dir)
    data = out / "data"
    if not (data / "annotations" / "instances_val.json").is_file():
        h, w = get_config("solov2_demo").data.test_scale[::-1]
        make_synthetic_coco(data, num_images=(num_train, num_val), image_size=(h, w), seed=0)
    cfg = apply_overrides(get_config("solov2_demo"), overrides or [])
    cfg.data.data_root = str(data)
    metrics = run_training(cfg, TrainOptions(str(out / "train"), overwrite=True), device=device)
    if is_main_process():
        val_images = sorted((data / "val").iterdir())[:8]
        run_infer(
            str(out / "train" / "model_final.pth"),
            [str(p) for p in val_images],
            str(out / "vis"),
            device=device,
        )
    return metrics
