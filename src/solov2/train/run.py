"""Glue between the CLI and the engine: datasets, loaders, devices, distributed set-up."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data.loader import build_test_loader, build_train_loader, dataset_from_config
from ..errors import UserError
from ..model import build_model
from ..presets import get_config
from .checkpoint import load_checkpoint
from .dist import DistInfo, barrier, cleanup, collective_timeout, init_distributed, is_main_process
from .evaluate import autocast_dtype, evaluate
from .log import setup_logger
from .outdir import prepare_output_dir
from .threads import configure_threads, loader_workers
from .train import TrainOptions, config_from_checkpoint, train

logger = logging.getLogger("solov2")


def _sync_classes(cfg: Config, dataset: Any) -> None:
    """The model predicts the dataset's classes: set ``num_classes`` and ``class_names``."""
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


def _has_val(cfg: Config) -> bool:
    d = cfg.data
    if d.val_json:
        return True
    return bool(d.data_root) and os.path.isfile(
        os.path.join(d.data_root, "annotations", f"instances_{d.val_split}.json")
    )


def _log_failure(info: DistInfo, what: str, exc: BaseException) -> None:
    """One clear line per failing rank of a distributed job (torchrun then ends the others)."""
    if not info.distributed or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    hint = ""
    if (
        isinstance(exc, torch.distributed.DistError)
        or "gloo" in text.lower()
        or "nccl" in text.lower()
        or "timed out" in text.lower()
    ):
        hint = (
            " (a collective failed: another rank probably crashed or stopped responding; "
            f"collective timeout {int(collective_timeout().total_seconds())} s, set by "
            "SOLOV2_DIST_TIMEOUT)"
        )
    logger.error("rank %d of %d: %s failed: %s%s", info.rank, info.world_size, what, text, hint)


def _log_world(info: DistInfo, what: str) -> None:
    if info.distributed:
        logger.info(
            "distributed %s: world size %d (rank %d, local rank %d), backend %s, "
            "collective timeout %d s",
            what,
            info.world_size,
            info.rank,
            info.local_rank,
            torch.distributed.get_backend(),
            int(collective_timeout().total_seconds()),
        )


def _log_data_fit(dataset: Any, cfg: Config, max_images: int = 200) -> None:
    """Warn where the config does not fit the data (``solov2 data stats`` on a sample)."""
    from ..data.stats import dataset_stats

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
    cfg: Config,
    output_dir: str,
    *,
    device: str = "auto",
    init: str | None = None,
    resume: str | None = None,
    init_allow_partial: bool = False,
    overwrite: bool = False,
    eval_at_end: bool = True,
    channels_last: bool = False,
    compile: bool = False,
    sync_bn: bool = False,
    profile: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Train from a resolved config (single process, or one rank of a torchrun job).

    A folder holding another run is refused unless ``resume`` or ``overwrite``
    (:func:`~solov2.engine.outdir.prepare_output_dir`)."""
    info = init_distributed(device)
    try:
        prepare_output_dir(
            output_dir, resume=resume is not None, overwrite=overwrite, main=info.rank == 0
        )
    except BaseException:
        cleanup()
        raise
    setup_logger(output_dir, info.rank)
    try:
        _log_world(info, "training")
        _threads()
        workers = loader_workers(cfg.data.workers)
        train_set = dataset_from_config(cfg.data, "train", train=True)
        _sync_classes(cfg, train_set)
        if info.rank == 0:
            _log_data_fit(train_set, cfg)
        loader = build_train_loader(
            train_set,
            cfg.solver.batch_size,
            workers,
            aspect_grouping=cfg.data.aspect_grouping,
            seed=cfg.solver.seed,
            distributed=info.distributed,
            size_divisor=cfg.data.size_divisor,
            canvases=_canvases(cfg, train_set, compile),
        )
        val_set = val_loader = None
        if eval_at_end or cfg.solver.eval_period:
            if _has_val(cfg):
                val_set = dataset_from_config(cfg.data, "val", train=False)
                val_loader = build_test_loader(
                    val_set,
                    max(1, cfg.solver.batch_size),
                    workers,
                    size_divisor=cfg.data.size_divisor,
                    test_scale=cfg.data.test_scale,
                )
            else:
                logger.info("no validation split found: skipping evaluation")
        opts = TrainOptions(
            output_dir,
            init=init,
            init_allow_partial=init_allow_partial,
            resume=resume,
            channels_last=channels_last,
            compile=compile,
            eval_at_end=eval_at_end,
            sync_bn=sync_bn,
            profile=profile,
        )
        return train(cfg, opts, info, train_set, loader, val_set, val_loader)
    except BaseException as e:
        _log_failure(info, "training", e)
        raise
    finally:
        cleanup()


def _threads() -> None:
    note = configure_threads()
    if note:
        logger.info("CPU threads: %s (OMP_NUM_THREADS=N sets them)", note)


def _canvases(cfg: Config, train_set: Any, compile: bool) -> list[tuple[int, int]] | None:
    """``data.canvas_buckets`` canvases; ``--compile`` without them uses 2 per orientation."""
    from ..data.canvas import dataset_canvases

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


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)


def load_model_for_eval(
    checkpoint: str, config: str | None, device: torch.device
) -> tuple[torch.nn.Module, Config]:
    """Model + config from one of our checkpoints (the config comes with it unless given)."""
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg = get_config(config) if config else config_from_checkpoint(ckpt)
    if config and "config" in ckpt:  # keep the trained class list
        stored = config_from_checkpoint(ckpt)
        cfg.model.num_classes = stored.model.num_classes
        cfg.data.class_names = stored.data.class_names
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"{checkpoint}: weights do not fit {cfg.name}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return model.to(device).eval(), cfg


def run_evaluation(
    checkpoint: str,
    config: str | None,
    args: argparse.Namespace,
    resolve: Callable[[argparse.Namespace, Config], Config],
) -> dict[str, Any]:
    """``solov2 eval``: batched inference + COCO segm/bbox AP (sharded under torchrun)."""
    info = init_distributed(args.device)
    out = args.output_dir or (
        str(Path(checkpoint).parent / "eval")
        if Path(checkpoint).is_file()
        else str(Path(checkpoint) / "eval")
    )
    setup_logger(out, info.rank)
    try:
        _log_world(info, "evaluation")
        _threads()
        model, cfg = load_model_for_eval(checkpoint, config, info.device)
        cfg = resolve(args, cfg)
        dataset = dataset_from_config(cfg.data, "val", train=False)
        if len(dataset.class_names) != cfg.model.num_classes:
            raise UserError(
                f"{dataset.json_path}: {len(dataset.class_names)} categories but the "
                f"checkpoint predicts {cfg.model.num_classes}"
            )
        loader = build_test_loader(
            dataset,
            args.batch_size,
            loader_workers(cfg.data.workers),
            size_divisor=cfg.data.size_divisor,
            test_scale=cfg.data.test_scale,
        )
        amp = cfg.solver.amp
        if getattr(args, "fast", False):
            from ..infer.fast import FastModel

            model = FastModel(
                model,
                dtype=autocast_dtype(amp),
                channels_last=True,
                cuda_graphs=info.device.type == "cuda",
            )
            amp = "none"  # FastModel runs in its own dtype
            logger.info(
                "fast path: weights in %s, channels-last, CUDA graphs: %s",
                model.dtype or model.autocast_dtype or "float32",
                model.cuda_graphs,
            )
        metrics = evaluate(
            model,
            loader,
            dataset,
            cfg,
            info.device,
            amp=amp,
            output_dir=out if is_main_process() else None,
            backend=args.backend,
            max_dets=getattr(args, "max_dets", None),
        )
        barrier()  # every rank returns once rank 0 has written metrics.json
        return metrics
    except BaseException as e:
        _log_failure(info, "evaluation", e)
        raise
    finally:
        cleanup()


def run_demo(
    output_dir: str,
    *,
    device: str = "auto",
    num_train: int = 300,
    num_val: int = 60,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The bundled end-to-end job: synthetic data, train ``solov2_demo``, evaluate, overlays."""
    from ..config import apply_overrides
    from ..data.synthetic import make_synthetic_coco
    from ..infer.infer_cmd import run_infer

    out = Path(output_dir)
    data = out / "data"
    if not (data / "annotations" / "instances_val.json").is_file():
        h, w = get_config("solov2_demo").data.test_scale[::-1]
        make_synthetic_coco(data, num_train=num_train, num_val=num_val, image_size=(h, w), seed=0)
    cfg = apply_overrides(get_config("solov2_demo"), overrides or [])
    cfg.data.data_root = str(data)
    metrics = run_training(cfg, str(out / "train"), device=device, overwrite=True)
    if is_main_process():
        val_images = sorted((data / "val").iterdir())[:8]
        run_infer(
            str(out / "train" / "model_final.pth"),
            [str(p) for p in val_images],
            str(out / "vis"),
            score_thr=0.3,
            device=device,
        )
    return metrics
