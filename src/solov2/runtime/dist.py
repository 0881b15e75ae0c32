"""Thin ``torch.distributed`` helpers for ``torchrun`` launches.

``torchrun --nproc-per-node=N -m solov2 train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``); :func:`init_distributed` reads them and
starts an NCCL (CUDA) or gloo (CPU) process group. Without those variables everything runs as
a single process and every helper here degrades to a no-op.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import UserError

logger = logging.getLogger("solov2")

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_mean",
    "any_across_ranks",
    "barrier",
    "broadcast_module_state",
    "cleanup",
    "collective_timeout",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_process",
    "log_failure",
    "log_world",
    "seed_everything",
]

DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    distributed: bool
    device: torch.device


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None


def collective_timeout() -> datetime.timedelta:
    """Timeout of every collective: ``SOLOV2_DIST_TIMEOUT`` seconds, default 30 minutes.

    A rank that waits longer than this for its peers (one of them crashed, hangs or is stuck in
    I/O) raises instead of hanging, and ``torchrun`` then ends the job.
    """
    seconds = _env_int("SOLOV2_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
    if seconds <= 0:
        raise UserError(f"SOLOV2_DIST_TIMEOUT={seconds} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def _elastic_store(world_size: int, timeout: datetime.timedelta) -> Any:
    """Under ``torchrun``, the agent's TCPStore at ``MASTER_ADDR:MASTER_PORT`` with a key prefix
    unique to this attempt of the job; ``None`` outside torchrun (plain ``env://``).

    The agent's store outlives the workers, so after a ``--max-restarts`` restart a plain
    ``env://`` process group would find the previous attempt's keys (e.g. the dead rank 0's
    gloo address) and could connect to a dead peer and time out. The prefix
    (``TORCHELASTIC_RUN_ID``/``TORCHELASTIC_RESTART_COUNT``) keeps attempts apart.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    addr, port = os.environ.get("MASTER_ADDR"), _env_int("MASTER_PORT", 0)
    if not addr or port <= 0:
        return None
    store = dist.TCPStore(addr, port, world_size, is_master=False, timeout=timeout)
    prefix = (
        f"solov2/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
        f"attempt{_env_int('TORCHELASTIC_RESTART_COUNT', 0)}"
    )
    return dist.PrefixStore(prefix, store)


def init_distributed(device_type: str = "cuda") -> DistInfo:
    """Start the process group if launched by torchrun; pick this process's device.

    Args:
        device_type: ``"cuda"``, ``"cpu"`` or ``"auto"`` (CUDA when available).

    The timeout of collective operations is 30 minutes, or ``SOLOV2_DIST_TIMEOUT`` seconds.
    """
    if device_type == "auto":
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type not in ("cuda", "cpu"):
        raise UserError(f"device: {device_type!r} is not one of cuda|cpu|auto")
    if device_type == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was requested but no CUDA device is available")

    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world_size}")

    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")

    distributed = world_size > 1
    if distributed and not dist.is_initialized():
        timeout = collective_timeout()
        backend = "nccl" if device_type == "cuda" else "gloo"
        extra: dict[str, Any] = {"device_id": device} if device_type == "cuda" else {}
        store = _elastic_store(world_size, timeout)
        if store is not None:
            dist.init_process_group(
                backend, store=store, rank=rank, world_size=world_size, timeout=timeout, **extra
            )
        else:
            dist.init_process_group(backend, timeout=timeout, **extra)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        distributed = world_size > 1
    return DistInfo(rank, world_size, local_rank, distributed, device)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if _active() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all processes (no-op when not distributed)."""
    if not _active() or get_world_size() == 1:
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over all processes (a new tensor; the input is not modified)."""
    if not _active() or get_world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.float()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


def _flag_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def any_across_ranks(*flags: bool | torch.Tensor) -> tuple[bool, ...]:
    """For each flag (a bool or a one-element tensor), whether it is true on *any* process: one
    small all-reduce and one host sync for all of them.

    Used for decisions every rank must take together (skip a non-finite step, stop on a signal):
    a rank that decided alone would leave the others waiting in the next collective.
    """
    multi = _active() and get_world_size() > 1
    tensors = [f for f in flags if isinstance(f, torch.Tensor)]
    if not multi and not tensors:
        return tuple(bool(f) for f in flags)
    device = _flag_device() if multi else tensors[0].device
    t = torch.stack(
        [
            f.detach().reshape(()).to(device=device, dtype=torch.int32)
            if isinstance(f, torch.Tensor)
            else torch.tensor(int(bool(f)), dtype=torch.int32, device=device)
            for f in flags
        ]
    )
    if multi:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def broadcast_module_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into every other process's ``module`` (in place).

    DDP keeps parameters equal, but trainable BatchNorm running statistics drift per rank after
    the last forward (DDP broadcasts rank 0's buffers only at the start of each forward); call this
    before a sharded evaluation so every rank evaluates exactly the weights rank 0 saves.
    """
    if not _active() or get_world_size() == 1:
        return
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=src)


def all_gather_object(obj: Any) -> list[Any]:
    """Picklable ``obj`` from every process, in rank order (``[obj]`` when not distributed)."""
    if not _active() or get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Destroy the process group if one was started."""
    if _active():
        dist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python ``random``, numpy and torch (CPU and CUDA) with ``seed + rank``; return it."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def log_failure(info: DistInfo, what: str, exc: BaseException) -> None:
    """One clear line per failing rank of a distributed job (torchrun then ends the others)."""
    if not info.distributed or isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    hint = ""
    if (
        isinstance(exc, dist.DistError)
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


def log_world(info: DistInfo, what: str) -> None:
    """One line describing the process group of a distributed job (nothing for one process)."""
    if info.distributed:
        logger.info(
            "distributed %s: world size %d (rank %d, local rank %d), backend %s, "
            "collective timeout %d s",
            what,
            info.world_size,
            info.rank,
            info.local_rank,
            dist.get_backend(),
            int(collective_timeout().total_seconds()),
        )
