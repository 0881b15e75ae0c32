"""Batched inference over a dataset and COCO evaluation (sharded across ranks under torchrun)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config
from ..data.transforms import padded_size
from ..postprocess import PostProcessor
from ..runtime.device import autocast_dtype
from ..runtime.dist import is_main_process
from ..runtime.log import show_progress
from ..structures import Batch, Predictions
from .coco_eval import Backend, CocoEvaluator, format_table, write_results

__all__ = ["EvalOptions", "evaluate", "predict_batch"]

logger = logging.getLogger("solov2")


@dataclass
class EvalOptions:
    """How :func:`evaluate` runs and reports.

    Attributes:
        amp: autocast dtype of the forward pass (``"none"``, ``"bf16"``, ``"fp16"``).
        output_dir: where rank 0 writes ``coco_instances_results.json`` and ``metrics.json``
            (None: nothing written).
        backend: COCOeval implementation (``"auto"``, ``"pycocotools"``, ``"faster"``).
        progress: a progress bar on rank 0.
        max_dets: detections per image that COCOeval counts (default: the model's own cap,
            ``cfg.model.test.max_per_img``, so dense datasets are not scored at COCO's 100).
        match_score_thr: also the instance-matching metrics (``metrics["match"]``,
            :meth:`~.coco_eval.CocoEvaluator.match`) of the predictions scoring at least this;
            None: not computed (``solov2 eval`` passes ``--match-score-thr``).
        label_ids: the dataset's category id of each model label (``solov2 eval``:
            :func:`solov2.data.coco_names.dataset_category_ids`); None: the dataset's
            categories in their order (a model trained on this dataset).
    """

    amp: str = "none"
    output_dir: str | Path | None = None
    backend: Backend = "auto"
    progress: bool = True
    max_dets: int | None = None
    match_score_thr: float | None = None
    label_ids: list[int] | None = None


@torch.inference_mode()
def predict_batch(
    model: nn.Module,
    batch: Batch,
    cfg: Config,
    device: torch.device,
    amp: str = "none",
    post: PostProcessor | None = None,
) -> list[Predictions]:
    """Network + post-processing for one padded batch; predictions in the original frame.

    SOLOv2's grid cells and coordinate features span the padded input, so an image padded to a
    larger batch-mate (say a portrait image next to a landscape one) would get other results
    than alone. Images are therefore run in groups of the same own padded size (a multiple of
    ``cfg.data.size_divisor``), each cropped from the batch: an image's result never depends on
    its batch-mates, as in the reference (one image per GPU at test time). ``post``: the
    config's :class:`~solov2.postprocess.PostProcessor` when the caller already built it.
    """
    images = batch.images.to(device, non_blocking=True)
    dtype = autocast_dtype(amp)
    post = post or PostProcessor.from_config(cfg)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (ih, iw) in enumerate(batch.image_sizes.tolist()):
        groups.setdefault(padded_size(ih, iw, cfg.data.size_divisor), []).append(i)
    preds: list[Predictions | None] = [None] * len(batch.image_ids)
    for (hp, wp), idx in groups.items():
        x = (
            images
            if len(idx) == images.shape[0] and (hp, wp) == tuple(images.shape[-2:])
            else images[idx, :, :hp, :wp]
        )
        sizes, orig = batch.image_sizes[idx], batch.orig_sizes[idx]
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, sizes)
        for i, p in zip(idx, post(out, sizes, orig)):
            preds[i] = p
    return [p for p in preds if p is not None]


def evaluate(
    model: nn.Module,
    loader: Any,
    dataset: Any,
    cfg: Config,
    device: torch.device,
    options: EvalOptions | None = None,
) -> dict[str, Any]:
    """Run the model over ``loader`` (this rank's shard) and evaluate COCO segm/bbox AP
    (:class:`EvalOptions`: autocast, output folder, COCOeval backend and cap, progress bar).

    Results (RLE, never dense masks) are gathered to rank 0, which computes the metrics, writes
    ``coco_instances_results.json`` and ``metrics.json`` into ``output_dir`` and logs the tables.
    Other ranks return ``{}``.
    """
    opts = options or EvalOptions()
    was_training = model.training
    model.eval()
    cap = cfg.model.test.max_per_img if opts.max_dets is None else opts.max_dets
    ids = list(dataset.cat_ids) if opts.label_ids is None else list(opts.label_ids)
    name_of = dict(zip(dataset.cat_ids, dataset.class_names))
    evaluator = CocoEvaluator(
        dataset.coco, ids, [name_of[i] for i in ids], backend=opts.backend, max_dets=cap
    )
    post = PostProcessor.from_config(cfg)
    start = time.perf_counter()
    n_images = 0
    show = opts.progress and is_main_process() and show_progress()
    bar = tqdm(loader, desc="eval", disable=not show, leave=False)
    for batch in bar:
        if batch.events and hasattr(dataset, "record_events"):
            dataset.record_events(batch.events)
        preds = predict_batch(model, batch, cfg, device, opts.amp, post)
        evaluator.process(batch.image_ids, [p.to("cpu") for p in preds])
        n_images += len(batch.image_ids)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    evaluator.gather()
    if not is_main_process():
        return {}
    metrics = evaluator.evaluate()
    metrics["images"] = len(evaluator.image_ids)
    metrics["seconds"] = round(elapsed, 2)
    if opts.match_score_thr is not None:
        metrics["match"] = evaluator.match(opts.match_score_thr).to_dict()
    logger.info(
        "evaluation on %d images (this rank %d) took %.1f s\n%s",
        metrics["images"],
        n_images,
        elapsed,
        format_table(metrics),
    )
    if opts.output_dir is not None:
        write_results(opts.output_dir, evaluator.results(), metrics)
    return metrics
