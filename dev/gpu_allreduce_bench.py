#!/usr/bin/env python3
"""Time NCCL all-reduce of one training step's gradients (fp32, the size of a preset's trainable
parameters) between the GPUs of this machine, as DDP does every step.

Usage: torchrun --nproc_per_node 2 dev/gpu_allreduce_bench.py [--config solov2_r50_fpn_1x]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from solov2.model import build_model  # noqa: E402
from solov2.presets import get_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="solov2_r50_fpn_1x")
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    n = sum(q.numel() for q in build_model(get_config(args.config)).parameters() if q.requires_grad)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.ones(n, dtype=dtype, device="cuda")
        for _ in range(3):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / args.iters * 1e3
        gb = n * x.element_size() / 1e9
        ws = dist.get_world_size()
        if rank == 0:  # bus bandwidth as nccl-tests reports it: 2 (W - 1) / W x size / time
            print(
                f"all_reduce {args.config}: {n / 1e6:.1f} M {dtype} values ({gb * 1e3:.0f} MB) "
                f"over {ws} GPUs: {ms:.2f} ms, bus bandwidth {2 * (ws - 1) / ws * gb / ms * 1e3:.0f}"
                " GB/s",
                flush=True,
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
