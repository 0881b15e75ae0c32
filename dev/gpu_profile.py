"""Profile one inference and one training step of a preset on the GPU (torch.profiler).

Usage: python3 dev/gpu_profile.py [preset] [HxW] [batch] [amp]
Prints the top CUDA-time ops for each mode and FLOP/byte counts of the network.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from solov2.model import build_model
from solov2.postprocess import PostProcessor
from solov2.presets import get_config
from solov2.structures import Batch, Instances
from solov2.train.step import build_optimizer, train_step


def synthetic_batch(b: int, h: int, w: int, device: torch.device) -> Batch:
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(b):
        n = int(torch.randint(1, 8, (1,), generator=g))
        masks = torch.zeros(n, h, w, dtype=torch.uint8)
        boxes = []
        for k in range(n):
            bh = int(torch.randint(16, h // 2, (1,), generator=g))
            bw = int(torch.randint(16, w // 2, (1,), generator=g))
            y = int(torch.randint(0, h - bh, (1,), generator=g))
            x = int(torch.randint(0, w - bw, (1,), generator=g))
            masks[k, y : y + bh, x : x + bw] = 1
            boxes.append([x, y, x + bw, y + bh])
        targets.append(
            Instances(
                masks,
                torch.randint(0, 80, (n,), generator=g),
                torch.tensor(boxes, dtype=torch.float32),
            )
        )
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    sizes = torch.tensor([[h, w]] * b)
    return Batch(images, sizes, sizes.clone(), list(range(b)), targets).to(device)


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "solov2_r50_fpn_1x"
    h, w = (int(v) for v in (sys.argv[2] if len(sys.argv) > 2 else "800x1216").split("x"))
    b = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    amp = sys.argv[4] if len(sys.argv) > 4 else "bf16"
    device = torch.device("cuda")
    cfg = get_config(preset)
    cfg.solver.amp = amp
    model = build_model(cfg).to(device)
    batch = synthetic_batch(b, h, w, device)
    opt = build_optimizer(model, cfg, 0.01)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": torch.float32}[amp]

    def step() -> None:
        losses = train_step(model, batch, cfg, amp)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(opt.param_groups[0]["params"], 35)
        opt.step()

    post = PostProcessor.from_config(cfg)

    def infer() -> None:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=amp != "none"):
            out = model(batch.images, batch.image_sizes)
            post(out, batch.image_sizes, batch.orig_sizes)

    for name, fn, mode in (("train", step, True), ("infer", infer, False)):
        model.train(mode)
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / 5
        print(f"== {name}: {dt * 1e3:.1f} ms/iter, {b / dt:.1f} img/s (batch {b}, {h}x{w}, {amp})")
        with profile(
            activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_flops=True
        ) as prof:
            fn()
            torch.cuda.synchronize()
        print(
            prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=25, max_name_column_width=60
            )
        )


if __name__ == "__main__":
    main()
