"""What :func:`solov2.engine.train.train` sets up around its model: SyncBatchNorm / DDP wrapping
and ``torch.compile`` with static shapes."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import Config
from ..errors import UserError
from .dist import DistInfo

logger = logging.getLogger("solov2")

COMPILE_SHAPES = 16  # input shapes a compiled training model may meet (canvas buckets: <= 4)


def wrap_model(model: nn.Module, cfg: Config, dist_info: DistInfo,
               sync_bn: bool) -> tuple[nn.Module, bool]:
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
                logger.info("--sync-bn: model.backbone.norm_eval is on, so BatchNorm statistics "
                            "are frozen and SyncBatchNorm changes nothing")
            net = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            converted = True
    if dist_info.distributed:
        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False, gradient_as_bucket_view=True)
    return net, converted


def compile_for_training(net: nn.Module, shapes: int = COMPILE_SHAPES,
                         backend: Any = "inductor") -> nn.Module:
    """``torch.compile`` with static shapes: one graph per input shape, never a dynamic one
    (dynamo's automatic dynamic shapes made multi-scale training crawl), and up to ``shapes``
    of them before dynamo gives up and runs eagerly. Pad batches to a few canvases
    (``data.canvas_buckets``) to bound the shapes."""
    import torch._dynamo

    dyn = torch._dynamo.config
    name = "recompile_limit" if hasattr(dyn, "recompile_limit") else "cache_size_limit"
    setattr(dyn, name, max(int(getattr(dyn, name)), shapes))
    return torch.compile(net, dynamic=False, backend=backend)  # type: ignore[return-value]
