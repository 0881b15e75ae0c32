"""Time the vectorised ``build_targets`` against a per-instance Python loop (reference style).

The loop is the independent transcription of the reference's ``solov2_target_single`` kept in
``tests/test_targets.py`` (per image, per level, per instance, per cell), here with the
reference's per-(level, instance) mask downscale and per-cell mask copies switched on.

Usage: ``python dev/bench_targets.py [--height 800 --width 1216 --images 16 --instances 20]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_targets import (  # noqa: E402
    R50_GRIDS,
    R50_RANGES,
    random_instances,
    reference_targets,
)

from solov2.targets import build_targets, downsample_masks  # noqa: E402


def loop_with_masks(batch, feat, grids, ranges, num_classes):
    """The loop reference plus the reference's mask work: downscale each hit instance's mask once
    per level and paste one copy per positive cell."""
    cate, pairs = reference_targets(batch, feat, grids, ranges, num_classes)
    masks = torch.cat([i.masks for i in batch])
    cache: dict[int, torch.Tensor] = {}
    copies = []
    for _, _, k in pairs:
        if k not in cache:  # the reference rescales once per (level, instance); close enough
            cache[k] = downsample_masks(masks[k : k + 1])[0]
        cur = torch.zeros(feat, dtype=torch.uint8)
        cur[: cache[k].shape[0], : cache[k].shape[1]] = cache[k]
        copies.append(cur)
    return cate, pairs, copies


def timeit(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1216)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--instances", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    hp, wp = args.height, args.width
    feat = (hp // 4, wp // 4)
    gen = torch.Generator().manual_seed(0)
    batch = [random_instances(gen, args.instances, hp, wp, 80) for _ in range(args.images)]

    t = build_targets(batch, feat, R50_GRIDS, R50_RANGES, 80)  # warm-up + correctness
    cate, pairs, _ = loop_with_masks(batch, feat, R50_GRIDS, R50_RANGES, 80)
    got = sorted(zip(t.pos_batch.tolist(), t.pos_cell.tolist(), t.pos_inst.tolist()))
    same = got == sorted(pairs) and torch.equal(t.cate_labels, cate)

    vec = timeit(lambda: build_targets(batch, feat, R50_GRIDS, R50_RANGES, 80), args.runs)
    loop = timeit(lambda: loop_with_masks(batch, feat, R50_GRIDS, R50_RANGES, 80), args.runs)
    print(
        f"frame {hp}x{wp} (features {feat[0]}x{feat[1]}), {args.images} images x "
        f"{args.instances} instances, R50 grids, {len(pairs)} positive pairs, "
        f"torch threads {torch.get_num_threads()}, median of {args.runs} runs, CPU"
    )
    print(f"{'implementation':<34}{'ms':>10}")
    print(f"{'vectorised build_targets':<34}{vec:>10.1f}")
    print(f"{'per-instance loop (reference)':<34}{loop:>10.1f}")
    print(f"speed-up {loop / vec:.1f}x; identical pairs and category map: {same}")


if __name__ == "__main__":
    main()
