"""Stopping cleanly on SIGTERM/SIGINT, and a fault-injection hook for tests."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from ..errors import UserError

logger = logging.getLogger("solov2")


class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and exits cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


FAULT_ENV = "SOLOV2_FAULT_RANK_ITER"
_FAULT_KINDS = ("raise", "kill", "hang", "nan")


class InjectedFault(RuntimeError):
    """Raised by the testing fault hook (``SOLOV2_FAULT_RANK_ITER``)."""


def parse_faults(raw: str | None, rank: int) -> dict[int, str]:
    """Testing aid: the faults ``SOLOV2_FAULT_RANK_ITER`` asks of ``rank``, ``{iteration: kind}``.

    Format: comma-separated ``RANK:ITER[:KIND]`` with a 1-based iteration and ``KIND`` one of
    ``raise`` (default: raise :class:`InjectedFault`), ``kill`` (SIGKILL this process), ``hang``
    (stop responding until signalled) or ``nan`` (make this rank's loss NaN). Faults fire only on
    the first attempt of a job: not after a ``torchrun --max-restarts`` restart
    (``TORCHELASTIC_RESTART_COUNT`` > 0).
    """
    if not raw or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") not in ("", "0"):
        return {}
    out: dict[int, str] = {}
    for item in raw.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            r, i = int(parts[0]), int(parts[1])
        except ValueError:
            raise UserError(f"{FAULT_ENV}={raw!r}: expected RANK:ITER[:KIND] items") from None
        kind = parts[2] if len(parts) == 3 else "raise"
        if kind not in _FAULT_KINDS:
            raise UserError(f"{FAULT_ENV}: fault kind {kind!r} is not one of {_FAULT_KINDS}")
        if r == rank:
            out[i] = kind
    return out


def inject_fault(kind: str, rank: int, iteration: int, stop: StopFlag) -> None:
    where = f"rank {rank}, iteration {iteration}"
    logger.error("%s: injecting fault %r (%s, a testing aid)", where, kind, FAULT_ENV)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        while stop.signal is None:
            time.sleep(0.05)
        raise InjectedFault(f"{where}: hang ended by signal {stop.signal}")
    raise InjectedFault(f"{where}: injected failure ({FAULT_ENV})")
