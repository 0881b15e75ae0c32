"""Suite-wide settings: one intra-op thread per process (the suite also runs subprocesses and
torchrun jobs side by side on 2-core machines, where oversubscription costs 10x)."""

import logging
import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """In-process CLI calls attach console handlers to the captured stdout: detach them."""
    yield
    lg = logging.getLogger("solov2")
    for h in list(lg.handlers):
        if getattr(h, "_solov2_handler", False):
            lg.removeHandler(h)
            h.close()
