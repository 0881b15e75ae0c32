"""CPU thread counts that survive a shared machine.

PyTorch starts one intra-op thread per physical core. On a machine whose cores other jobs
already use, those threads wait on each other at every parallel region (a 2-core machine with
two other busy jobs ran the demo's training step 10-40x slower than alone; one thread
halved the time of the same job). So, unless ``OMP_NUM_THREADS`` is set (then torch's choice
stands): intra-op threads = the cores not busy right now (``/proc/stat`` sampled for 0.2 s,
else the 1-minute load average), shared among the processes of this machine
(``LOCAL_WORLD_SIZE`` under torchrun), at most torch's default and at least 1; inter-op
threads 1 (our graphs have no independent ops to run side by side). Data-loader workers are
capped at the cores per process minus the one the main process computes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping

import torch

logger = logging.getLogger("solov2")

__all__ = [
    "available_cores",
    "busy_cores",
    "choose_threads",
    "choose_workers",
    "configure_threads",
    "loader_workers",
    "log_threads",
]


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _stat_times(text: str) -> tuple[int, int]:
    """``(busy, total)`` jiffies of the ``cpu`` line of ``/proc/stat`` (idle + iowait idle)."""
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])  # guest time is already counted in user time
    return total - idle, total


def busy_from_stat(before: str, after: str, cpus: int) -> float:
    """Cores busy between two ``/proc/stat`` readings of a machine with ``cpus`` CPUs."""
    b0, t0 = _stat_times(before)
    b1, t1 = _stat_times(after)
    return cpus * (b1 - b0) / max(t1 - t0, 1)


def busy_cores(interval: float = 0.2) -> float:
    """Cores other processes keep busy now (this process sleeps while it measures)."""
    try:
        with open("/proc/stat") as f:
            before = f.read()
        time.sleep(interval)
        with open("/proc/stat") as f:
            after = f.read()
        return busy_from_stat(before, after, os.cpu_count() or 1)
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):
            return 0.0


def choose_threads(cores: int, busy: float, default: int, procs: int = 1) -> int:
    """Intra-op threads of one of ``procs`` processes on ``cores`` cores, ``busy`` of them in use
    by others; at most ``default`` (torch's: one per physical core), at least 1."""
    free = max(1, round(cores - busy))
    return max(1, min(default, free) // max(procs, 1))


def choose_workers(requested: int, cores: int, procs: int = 1) -> int:
    """Data-loader workers: ``requested``, at most the cores per process minus one."""
    return max(0, min(requested, cores // max(procs, 1) - 1))


def _local_procs(env: Mapping[str, str]) -> int:
    try:
        return max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def configure_threads(env: Mapping[str, str] | None = None) -> str | None:
    """Set torch's intra-op (and inter-op) threads as the module docstring says.

    Returns:
        What was set (for the log), or ``None`` when ``OMP_NUM_THREADS`` decides.
    """
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS"):
        return None
    cores, busy = available_cores(), busy_cores()
    n = choose_threads(cores, busy, torch.get_num_threads(), _local_procs(env))
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op work already started: keep what it has
        pass
    return f"{n} intra-op thread(s): {cores} core(s), {busy:.1f} busy with other work"


def loader_workers(requested: int) -> int:
    """:func:`choose_workers` for this machine, logging when it lowers ``data.workers``."""
    cores = available_cores()
    n = choose_workers(requested, cores, _local_procs(os.environ))
    if n < requested:
        logger.info(
            "data.workers %d -> %d (%d core(s) for %d process(es))",
            requested,
            n,
            cores,
            _local_procs(os.environ),
        )
    return n


def log_threads() -> None:
    """:func:`configure_threads`, saying what it set in the log."""
    note = configure_threads()
    if note:
        logger.info("CPU threads: %s (OMP_NUM_THREADS=N sets them)", note)
