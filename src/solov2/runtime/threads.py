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

The commands choose once, at start; other jobs that start later made a demo training step go
from 0.48 s to 4.15 s. :class:`ThreadWatch` re-checks during CPU training: every 30 s, the
cores busy with work other than this process and its data-loader workers (``/proc/stat`` and
their CPU times since the last check, no sleep), and sets the threads again, between 1 and the
count torch started with.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

logger = logging.getLogger("solov2")

__all__ = [
    "LoadProbe",
    "ThreadWatch",
    "available_cores",
    "busy_cores",
    "choose_threads",
    "choose_workers",
    "configure_threads",
    "loader_workers",
    "log_threads",
    "own_cpu_seconds",
]

_started_with: int | None = None  # torch's intra-op threads before configure_threads set them


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
    global _started_with
    if _started_with is None:
        _started_with = torch.get_num_threads()
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


def own_cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads) and its live child processes
    (data-loader workers: ``/proc/<pid>/stat``)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK")
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, ValueError, IndexError):
            pass
    return total


def _read_proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.read()


@dataclass
class LoadProbe:
    """Where :class:`ThreadWatch` reads the machine (tests give fakes): ``/proc/stat``'s text,
    this process's CPU seconds (:func:`own_cpu_seconds`), a clock and the machine's CPUs."""

    stat: Callable[[], str] = _read_proc_stat
    own_cpu: Callable[[], float] = own_cpu_seconds
    clock: Callable[[], float] = time.monotonic
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)


class ThreadWatch:
    """Intra-op threads re-chosen during a long CPU run, as the machine's load changes.

    :meth:`update` is called every iteration and does nothing until ``period`` seconds have
    passed since the last check; then the cores busy with other work over that span (the
    machine's, from ``/proc/stat``, minus this process's and its workers' CPU time) give the
    threads, :func:`choose_threads` of ``cores`` capped at ``ceiling``: fewer when other jobs
    started, back up to ``ceiling`` when they ended.
    """

    def __init__(
        self, ceiling: int, cores: int, period: float = 30.0, probe: LoadProbe | None = None
    ) -> None:
        self.ceiling, self.cores, self.period = max(1, ceiling), max(1, cores), period
        self.probe = probe or LoadProbe()
        self._last = self._sample()

    @classmethod
    def for_training(
        cls, device: torch.device, env: Mapping[str, str] | None = None
    ) -> ThreadWatch | None:
        """A watch for one CPU training process, else None: on a GPU, when ``OMP_NUM_THREADS``
        decides, or under torchrun (the other ranks' work would count as other jobs')."""
        env = os.environ if env is None else env
        if device.type != "cpu" or env.get("OMP_NUM_THREADS") or _local_procs(env) > 1:
            return None
        try:
            return cls(_started_with or torch.get_num_threads(), available_cores())
        except (OSError, ValueError, IndexError):  # no /proc/stat: no watch
            return None

    def _sample(self) -> tuple[float, str, float]:
        p = self.probe
        return p.clock(), p.stat(), p.own_cpu()

    def update(self) -> int | None:
        """Check the load when ``period`` has passed; returns the new thread count when it set
        one, else None."""
        if self.probe.clock() - self._last[0] < self.period:
            return None
        t0, s0, c0 = self._last
        try:
            last = self._sample()
            machine = busy_from_stat(s0, last[1], self.probe.cpus)
        except (OSError, ValueError, IndexError):  # /proc/stat gone or garbled: stop watching
            self.period = math.inf
            return None
        self._last = last
        own = max(0.0, (last[2] - c0) / max(last[0] - t0, 1e-9))
        others = max(0.0, machine - own)
        n, before = choose_threads(self.cores, others, self.ceiling), torch.get_num_threads()
        if n == before:
            return None
        torch.set_num_threads(n)
        logger.info(
            "CPU threads %d -> %d: %.1f of %d core(s) busy with other work over the last %.0f s",
            before,
            n,
            others,
            self.cores,
            last[0] - t0,
        )
        return n
