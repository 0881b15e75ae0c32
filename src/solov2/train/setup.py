"""What :func:`solov2.train.loop.train` sets up around its loop: the initial weights
(backbone, ``--init``), the ``--resume`` state, SyncBatchNorm / DDP wrapping and
``torch.compile`` with static shapes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint.io import find_resume, load_checkpoint
from ..checkpoint.rng import restore_rng_state
from ..checkpoint.weights import (
    check_init_fits,
    check_resume_fits,
    init_from_checkpoint,
    load_backbone_weights,
)
from ..config import Config, config_to_dict
from ..errors import UserError
from ..model import SOLOv2, build_model
from ..runtime.dist import DistInfo

logger = logging.getLogger("solov2")

COMPILE_SHAPES = 16  # input shapes a compiled training model may meet (canvas buckets: <= 4)


def build_initial_model(cfg: Config, init: str | None, allow_partial: bool) -> SOLOv2:
    """``build_model(cfg)`` with its starting weights: the configured backbone weights, or all
    weights that fit from the ``init`` checkpoint (fine-tuning; refused when less than half fit
    unless ``allow_partial``)."""
    model = build_model(cfg)
    if cfg.model.backbone.weights and not init:
        load_backbone_weights(model, cfg.model.backbone.weights)
        logger.info("backbone weights from %s", cfg.model.backbone.weights)
    if init:
        init_ckpt = load_checkpoint(init)
        report = init_from_checkpoint(model, init_ckpt)
        logger.info("initialised from %s: %s", init, report.summary())
        for line in report.lines()[1:]:
            logger.info("%s", line)
        if not allow_partial:
            check_init_fits(report, init_ckpt, config_to_dict(cfg), init)
    return model


def resume_training(
    resume: str,
    out_dir: Path,
    model: SOLOv2,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    cfg: Config,
    dist_info: DistInfo,
) -> int:
    """``--resume [PATH]`` (``""``: ``out_dir``): load the model, optimizer, scaler and RNG state of
    the newest complete checkpoint there; returns its iteration (0 when there is none)."""
    target = Path(resume or out_dir)
    if not target.exists() and target.resolve() != out_dir.resolve():
        hint = (
            " (--resume takes an optional value: put it last or before another flag, "
            "not before a.b=value overrides)"
            if "=" in resume
            else ""
        )
        raise UserError(f"--resume {resume}: no such checkpoint or directory{hint}")
    path = find_resume(target)
    if path is None:
        logger.info("no checkpoint to resume in %s: starting from scratch", resume or out_dir)
        return 0
    ckpt = load_checkpoint(path, map_location="cpu")
    changed = check_resume_fits(model, ckpt, config_to_dict(cfg), str(path))
    if changed:
        logger.info("resuming with changed model settings: %s", "; ".join(changed))
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    start_iter = int(ckpt["iteration"])
    rngs = ckpt.get("rng_ranks") or []
    if len(rngs) == dist_info.world_size:  # same world size: each rank its own stream
        restore_rng_state(rngs[dist_info.rank])
    elif dist_info.rank == 0:
        restore_rng_state(ckpt["rng"])
    logger.info("resumed from %s at iteration %d", path, start_iter)
    return start_iter


def wrap_model(
    model: nn.Module, cfg: Config, dist_info: DistInfo, sync_bn: bool
) -> tuple[nn.Module, bool]:
    """SyncBatchNorm (``sync_bn``, distributed CUDA only) and DDP around ``model``; returns the
    network and whether SyncBatchNorm is on."""
    net, device = model, dist_info.device
    converted = False
    if sync_bn:
        if not dist_info.distributed:
            logger.info("--sync-bn: single process, nothing to synchronise")
        elif device.type != "cuda":
            raise UserError("--sync-bn needs CUDA devices (SyncBatchNorm does not run on CPU)")
        else:
            if cfg.model.backbone.norm_eval:
                logger.info(
                    "--sync-bn: model.backbone.norm_eval is on, so BatchNorm statistics "
                    "are frozen and SyncBatchNorm changes nothing"
                )
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            converted = True
    if dist_info.distributed:
        net = DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
            gradient_as_bucket_view=True,
        )
    return net, converted


def compile_for_training(
    net: nn.Module, shapes: int = COMPILE_SHAPES, backend: Any = "inductor"
) -> nn.Module:
    """``torch.compile`` with static shapes: one graph per input shape, never a dynamic one
    (dynamo's automatic dynamic shapes made multi-scale training crawl), and up to ``shapes``
    of them before dynamo gives up and runs eagerly. Pad batches to a few canvases
    (``data.canvas_buckets``) to bound the shapes."""
    import torch._dynamo  # only --compile needs dynamo: not loaded otherwise

    dyn = torch._dynamo.config
    name = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
    setattr(dyn, name, max(int(getattr(dyn, name)), shapes))
    # torch.compile of a module returns its OptimizedModule, typed as a plain callable
    return torch.compile(net, dynamic=False, backend=backend)  # type: ignore[return-value]
