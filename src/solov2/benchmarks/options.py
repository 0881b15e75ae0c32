"""The settings of one ``solov2 bench`` run (the command line's flags, as typed values)."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["BenchOptions"]


@dataclass
class BenchOptions:
    """What to time and how (``solov2 bench --help`` describes each flag).

    Attributes:
        mode: ``"infer"``, ``"train"`` or ``"loader"``.
        batch_size: images per step.
        iters, warmup: timed and untimed steps.
        amp: our autocast dtype (``"none"``, ``"fp16"``, ``"bf16"``).
        peer_amp: the peer's autocast dtype (None: ``amp``).
        compile, channels_last, fast: ours only (``torch.compile``, NHWC, ``FastModel``).
        compare: the peer, ``"maskrcnn"``, ``"mmdet"`` or None.
        workers: training-loader workers with real data (None: one per CPU core up to 16).
    """

    mode: str = "infer"
    batch_size: int = 1
    iters: int = 20
    warmup: int = 5
    amp: str = "none"
    peer_amp: str | None = None
    compile: bool = False
    channels_last: bool = False
    fast: bool = False
    compare: str | None = None
    workers: int | None = None

    @property
    def peer_dtype(self) -> str:
        """The peer's ``--amp``: ``--peer-amp`` when given, else ours."""
        return self.peer_amp or self.amp

    @property
    def loader_workers(self) -> int:
        """``--workers``, else one per CPU core up to 16."""
        return int(self.workers) if self.workers is not None else min(16, os.cpu_count() or 1)
