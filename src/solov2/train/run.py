"""Train a config on its data: the library entry point behind ``solov2 train`` and the demo.

Builds the datasets and loaders from the config, sets up the process group under torchrun, the
logger and the output folder, then runs :func:`solov2.train.loop.train`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..config import Config
from ..data.autoscale import DATA_FIT_IMAGES, auto_scale
from ..data.canvas import dataset_canvases
from ..data.loader import build_test_loader, build_train_loader, dataset_from_config
from ..data.stats import dataset_stats
from ..runtime.device import warn_slow_amp
from ..runtime.dist import cleanup, init_distributed, log_failure, log_world
from ..runtime.log import setup_logger
from ..runtime.threads import loader_workers, log_threads
from .loop import TrainOptions, ValData, train
from .outdir import prepare_output_dir

__all__ = ["TrainOptions", "run_training"]

logger = logging.getLogger("solov2")


def _sync_classes(cfg: Config, dataset: Any) -> None:
    """The model predicts the dataset's classes: set ``num_classes``, ``class_names`` and the
    dataset's ``category_ids`` (stored in ``config.yaml`` and every checkpoint, so predictions
    carry the dataset's own ids)."""
    names = list(dataset.class_names)
    if cfg.model.num_classes != len(names):
        logger.info(
            "dataset has %d classes: model.num_classes %d -> %d",
            len(names),
            cfg.model.num_classes,
            len(names),
        )
    cfg.model.num_classes = len(names)
    cfg.data.class_names = names
    cfg.data.category_ids = [int(i) for i in dataset.cat_ids]


def _has_val(cfg: Config) -> bool:
    d = cfg.data
    if d.val_json:
        return True
    if not d.data_root:
        return False
    return os.path.isfile(os.path.join(d.data_root, "annotations", f"instances_{d.val_split}.json"))


def _log_data_fit(dataset: Any, cfg: Config, max_images: int = DATA_FIT_IMAGES) -> None:
    """Warn where the config does not fit the data (``solov2 data stats`` on a sample)."""
    try:
        st = dataset_stats(dataset, cfg, max_images=max_images)
    except Exception as e:  # a report must never stop training  # noqa: BLE001
        logger.debug("data fit report skipped: %s", e)
        return
    logger.info(
        "data: %d instances in %d sampled images (median %g, max %g per image), "
        "median object %.0f px at the training scale",
        st.instances,
        st.images,
        st.per_image["median"],
        st.per_image["max"],
        st.size_px.get("median", float("nan")),
    )
    for w in st.warnings:
        logger.warning("data fit: %s (solov2 data stats for details)", w)


def run_training(
    cfg: Config, opts: TrainOptions, device: str = "auto", *, auto_scale_data: bool = False
) -> dict[str, Any]:
    """Train from a resolved config (single process, or one rank of a torchrun job) into
    ``opts.output_dir``; returns the final metrics (rank 0).

    A folder holding another run is refused unless ``opts.resume`` or ``opts.overwrite``
    (:func:`~solov2.train.outdir.prepare_output_dir`). ``auto_scale_data`` (``solov2 train
    --auto-scale``): train at the scales recommended for the training data
    (:func:`~solov2.data.autoscale.auto_scale`, logged), decided before any loader exists."""
    info = init_distributed(device)
    try:
        prepare_output_dir(
            opts.output_dir,
            resume=opts.resume is not None,
            overwrite=opts.overwrite,
            main=info.rank == 0,
        )
    except BaseException:
        cleanup()
        raise
    setup_logger(opts.output_dir, info.rank)
    try:
        log_world(info, "training")
        log_threads()
        warn_slow_amp(cfg.solver.amp, info.device)
        workers = loader_workers(cfg.data.workers)
        train_set = dataset_from_config(cfg.data, "train", train=True)
        _sync_classes(cfg, train_set)
        if auto_scale_data:
            scaled = auto_scale(train_set, cfg)
            for line in scaled.lines():
                logger.info("%s", line)
            cfg = scaled.cfg
        if info.rank == 0:
            _log_data_fit(train_set, cfg)
        loader = build_train_loader(
            train_set,
            cfg.solver.batch_size,
            workers,
            aspect_grouping=cfg.data.aspect_grouping,
            seed=cfg.solver.seed,
            size_divisor=cfg.data.size_divisor,
            canvases=_canvases(cfg, train_set, opts.compile),
        )
        val = None
        if opts.eval_at_end or cfg.solver.eval_period:
            if _has_val(cfg):
                val_set = dataset_from_config(cfg.data, "val", train=False)
                val_loader = build_test_loader(
                    val_set,
                    max(1, cfg.solver.batch_size),
                    workers,
                    size_divisor=cfg.data.size_divisor,
                    test_scale=cfg.data.test_scale,
                )
                val = ValData(val_set, val_loader)
            else:
                logger.info("no validation split found: skipping evaluation")
        return train(cfg, opts, info, train_set, loader, val)
    except BaseException as e:
        log_failure(info, "training", e)
        raise
    finally:
        cleanup()


def _canvases(cfg: Config, train_set: Any, compile: bool) -> list[tuple[int, int]] | None:
    """``data.canvas_buckets`` canvases; ``--compile`` without them uses 2 per orientation."""
    k = cfg.data.canvas_buckets or (2 if compile else 0)
    canvases = dataset_canvases(train_set, cfg.data, k)
    if canvases:
        logger.info(
            "batches padded to %d canvas(es) (data.canvas_buckets=%d%s): %s",
            len(canvases),
            k,
            ", for --compile" if not cfg.data.canvas_buckets else "",
            ", ".join(f"{h}x{w}" for h, w in canvases),
        )
    return canvases
