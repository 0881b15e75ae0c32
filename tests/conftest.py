"""Suite-wide settings: one intra-op thread per process (the suite also runs subprocesses and
torchrun jobs side by side on 2-core machines, where oversubscription costs 10x)."""

import os

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
