"""``solov2 eval``: COCO mask AP of a checkpoint (batched inference, sharded under torchrun), or
of a predictions file (``--results``, no model); and the instance-matching metrics of the same
predictions (``--match-score-thr``): ``metrics.json``'s ``match``, a table after COCO's."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..data.coco_names import class_names_of, dataset_category_ids
from ..data.loader import build_test_loader, dataset_from_config
from ..errors import UserError
from ..evaluation.coco_eval import format_table, write_metrics
from ..evaluation.evaluate import EvalOptions, evaluate
from ..evaluation.results import read_results, score_results
from ..infer.fast import FastModel
from ..infer.loading import load_for_inference
from ..model import SOLOv2
from ..presets import get_config
from ..runtime.device import autocast_dtype, warn_slow_amp
from ..runtime.dist import (
    DistInfo,
    barrier,
    cleanup,
    init_distributed,
    is_main_process,
    log_failure,
    log_world,
)
from ..runtime.log import setup_logger
from ..runtime.threads import loader_workers, log_threads
from .args import apply_flags
from .weights import weights_arg

__all__ = ["evaluate_checkpoint", "evaluate_results", "run"]

logger = logging.getLogger("solov2")


def run(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.results is None):
        raise UserError(
            "give exactly one of --checkpoint (run a model) and --results "
            "(score a predictions file)"
        )
    if args.max_dets is not None and args.max_dets < 1:
        raise UserError(f"--max-dets {args.max_dets}: must be >= 1")
    if args.results is not None:
        evaluate_results(args)
        return 0
    checkpoint = weights_arg(args.checkpoint)
    assert checkpoint is not None
    if checkpoint != args.checkpoint and not args.output_dir:  # not into the download cache
        name = Path(args.checkpoint.rsplit("/", 1)[-1]).stem
        args.output_dir = os.path.join("output", name, "eval")
    evaluate_checkpoint(checkpoint, args)
    return 0


def _fast(model: SOLOv2, amp: str, info: DistInfo) -> FastModel:
    """``--fast``: the model in the ``--amp`` dtype, channels-last, CUDA graphs on CUDA."""
    fast = FastModel(
        model,
        dtype=autocast_dtype(amp),
        channels_last=True,
        cuda_graphs=info.device.type == "cuda",
    )
    logger.info(
        "fast path: weights in %s, channels-last, CUDA graphs: %s",
        fast.dtype or fast.autocast_dtype or "float32",
        fast.cuda_graphs,
    )
    return fast


def evaluate_checkpoint(checkpoint: str, args: argparse.Namespace) -> dict[str, Any]:
    """``solov2 eval --checkpoint``: batched inference + COCO segm/bbox AP (sharded under
    torchrun); ``metrics.json`` and the COCO results into ``--output-dir`` (default: the
    checkpoint's folder's ``eval/``)."""
    info = init_distributed(args.device)
    out = args.output_dir or (
        str(Path(checkpoint).parent / "eval")
        if Path(checkpoint).is_file()
        else str(Path(checkpoint) / "eval")
    )
    setup_logger(out, info.rank)
    try:
        log_world(info, "evaluation")
        log_threads()
        model, cfg = load_for_inference(checkpoint, args.config, keep_classes=True)
        model = model.to(info.device).eval()
        cfg = apply_flags(args, cfg)
        warn_slow_amp(cfg.solver.amp, info.device)
        dataset = dataset_from_config(cfg.data, "val", train=False)
        label_ids, note = dataset_category_ids(
            (cfg.data.category_ids, class_names_of(cfg)),
            (dataset.cat_ids, dataset.class_names),
            str(dataset.json_path),
        )
        if note:
            logger.warning("%s", note)
        loader = build_test_loader(
            dataset,
            args.batch_size,
            loader_workers(cfg.data.workers),
            size_divisor=cfg.data.size_divisor,
            test_scale=cfg.data.test_scale,
        )
        net: nn.Module = _fast(model, cfg.solver.amp, info) if args.fast else model
        options = EvalOptions(
            amp="none" if args.fast else cfg.solver.amp,  # FastModel runs in its own dtype
            output_dir=out if is_main_process() else None,
            backend=args.backend,
            max_dets=args.max_dets,
            match_score_thr=args.match_score_thr,
            label_ids=label_ids,
        )
        metrics = evaluate(net, loader, dataset, cfg, info.device, options)
        barrier()  # every rank returns once rank 0 has written metrics.json
        return metrics
    except BaseException as e:
        log_failure(info, "evaluation", e)
        raise
    finally:
        cleanup()


def evaluate_results(args: argparse.Namespace) -> dict[str, Any]:
    """``solov2 eval --results FILE``: score a predictions file, write ``metrics.json``.

    The config (``--config``, else the defaults, then flags and ``a.b=value`` overrides) gives
    the dataset and the default cap, ``model.test.max_per_img``.
    """
    results_path = args.results
    cfg = apply_flags(args, get_config(args.config) if args.config else Config())
    cap = cfg.model.test.max_per_img if args.max_dets is None else args.max_dets
    entries = read_results(results_path)
    dataset = dataset_from_config(cfg.data, "val", train=False)
    p = Path(results_path)
    out = args.output_dir or str(p.parent / f"{p.stem}_eval")
    metrics = score_results(
        entries,
        dataset,
        source=results_path,
        max_dets=cap,
        backend=args.backend,
        match_score_thr=args.match_score_thr,
    )
    setup_logger(out)
    logger.info(
        "scored %s on %d images of %s\n%s",
        results_path,
        metrics["images"],
        dataset.json_path,
        format_table(metrics),
    )
    write_metrics(out, metrics)
    return metrics
