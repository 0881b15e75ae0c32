"""Inputs of ``solov2 bench``: synthetic images and batches, the real training loader, and the
loader-only mode (``--mode loader``: what the data pipeline delivers per second)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.canvas import dataset_canvases
from ..data.loader import build_train_loader, dataset_from_config
from ..ops.masks import masks_to_boxes
from ..structures import Batch, Instances, PackedMasks
from .options import BenchOptions
from .timing import Step, time_loop

N_SETS = 3  # distinct image sets / batches the timed loop rotates among


def image_sets(
    b: int, size: tuple[int, int], device: torch.device, g: torch.Generator
) -> list[list[Tensor]]:
    """``N_SETS`` lists of ``b`` uint8 ``[3, h, w]`` images on ``device``: smooth colour fields
    plus noise."""
    h, w = size
    sets = []
    for _ in range(N_SETS):
        low = torch.rand(b, 3, max(2, h // 64), max(2, w // 64), generator=g) * 200
        img = nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
        sets.append(list((img + torch.rand(b, 3, h, w, generator=g) * 55).byte().to(device)))
    return sets


def synthetic_batch(
    b: int,
    h: int,
    w: int,
    num_classes: int,
    device: torch.device,
    g: torch.Generator,
    size_divisor: int = 32,
) -> Batch:
    """A padded training :class:`Batch` on ``device``: random images of ``h x w``, each with
    1-8 random rectangles/ellipses (masks uint8 in the padded frame, labels, boxes)."""
    hp, wp = (int(math.ceil(s / size_divisor) * size_divisor) for s in (h, w))
    images = torch.zeros((b, 3, hp, wp), dtype=torch.uint8)
    images[:, :, :h, :w] = torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)
    yy, xx = torch.arange(hp).view(-1, 1) + 0.5, torch.arange(wp).view(1, -1) + 0.5

    def rint(lo: int, hi: int) -> int:  # uniform in [lo, hi]
        return int(torch.randint(lo, max(lo, hi) + 1, (1,), generator=g))

    targets = []
    for _ in range(b):
        masks = []
        for _ in range(rint(1, 8)):
            bw, bh = rint(max(2, w // 16), max(3, w // 2)), rint(max(2, h // 16), max(3, h // 2))
            x0, y0 = rint(0, w - bw), rint(0, h - bh)
            rect = (xx >= x0) & (xx < x0 + bw) & (yy >= y0) & (yy < y0 + bh)
            ell = ((xx - x0 - bw / 2) / (bw / 2)) ** 2 + ((yy - y0 - bh / 2) / (bh / 2)) ** 2 <= 1
            masks.append(rect if rint(0, 1) else ell)
        mk = torch.stack(masks).to(torch.uint8)
        labels = torch.randint(0, num_classes, (len(masks),), generator=g)
        targets.append(Instances(mk, labels, masks_to_boxes(mk)).to(device))
    sizes = torch.tensor([[h, w]] * b, dtype=torch.int64)
    return Batch(images.to(device), sizes, sizes.clone(), list(range(b)), targets)


def uses_real_data(cfg: Config) -> bool:
    return bool(cfg.data.data_root or cfg.data.train_json)


def real_loader(opts: BenchOptions, cfg: Config, canvas_k: int = 0) -> Any:
    """The training loader over ``cfg``'s train split (preset train scales, aspect grouping,
    pinned memory with CUDA), ``canvas_k`` canvas buckets per orientation (0: none)."""
    dataset = dataset_from_config(cfg.data, "train", train=True)
    return build_train_loader(
        dataset,
        opts.batch_size,
        opts.loader_workers,
        aspect_grouping=cfg.data.aspect_grouping,
        seed=cfg.solver.seed,
        size_divisor=cfg.data.size_divisor,
        canvases=dataset_canvases(dataset, cfg.data, canvas_k),
    )


def batch_source(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    size: tuple[int, int],
    canvas_k: int = 0,
) -> Callable[[], Step]:
    """A factory of ``get(i) -> Batch on the device``, each starting from the same batches: real
    data (``--real`` / ``--data-root`` / ``data.train_json``): the training loader, one
    continuous stream across epochs as in training, loading timed; else prebuilt synthetic
    batches."""
    fmt_ = torch.channels_last if opts.channels_last else torch.contiguous_format

    def fmt(b: Batch) -> Batch:
        return dataclasses.replace(b, images=b.images.contiguous(memory_format=fmt_))

    if uses_real_data(cfg):
        loader = real_loader(opts, cfg, canvas_k)

        def real() -> Step:
            it = loader.stream()
            return lambda i: fmt(next(it).to(device, non_blocking=True))

        return real
    g = torch.Generator().manual_seed(cfg.solver.seed)
    batches = [
        fmt(
            synthetic_batch(
                opts.batch_size, *size, cfg.model.num_classes, device, g, cfg.data.size_divisor
            )
        )
        for _ in range(N_SETS)
    ]
    return lambda: lambda i: batches[i % len(batches)]


def _batch_bytes(b: Batch) -> int:
    """Bytes of the tensors a loader worker hands over for ``b``."""
    n = b.images.numel() * b.images.element_size()
    for t in b.targets or []:
        m = t.masks
        parts = [m.bits, m.boxes] if isinstance(m, PackedMasks) else [m]
        n += sum(x.numel() * x.element_size() for x in [*parts, t.labels, t.boxes])
    return n


def run_loader(opts: BenchOptions, cfg: Config, device: torch.device) -> dict[str, Any]:
    """``--mode loader``: time ``next(batch).to(device)`` (synchronised) on the training loader:
    decoding, augmentation, collation, the worker-to-main transfer, pinning, the copy to the
    device and (compact masks) their unpacking there. No model runs.

    What a training loop can rely on is the sustained rate: images over the whole timed window,
    after a warmup that drains the batches the workers prefetched (``2 x workers``, PyTorch's
    ``prefetch_factor``), so ``img_per_s`` is not the rate at which a full queue empties, nor a
    median of bursty per-batch waits (``ms_per_iter_median`` keeps the latter)."""
    loader = real_loader(opts, cfg)
    warmup = max(opts.warmup, 2 * opts.loader_workers + 2)
    it = loader.stream()
    counts: list[tuple[int, int]] = []  # (instances, bytes) per timed batch

    def step(i: int) -> None:
        b = next(it)
        n = sum(len(t) for t in b.targets or [])
        if i >= warmup:
            counts.append((n, _batch_bytes(b)))
        b.to(device, non_blocking=True)

    r = time_loop(step, warmup, opts.iters, device, opts.batch_size)
    r["img_per_s"] = opts.batch_size * r["iters"] / max(r["total_s"], 1e-9)
    inst = sum(c[0] for c in counts) / max(1, len(counts))
    r.update(
        warmup=warmup,
        instances_per_s=r["img_per_s"] * inst / opts.batch_size,
        instances_per_batch=inst,
        mb_per_batch=sum(c[1] for c in counts) / max(1, len(counts)) / 2**20,
        workers=opts.loader_workers,
        compact_masks=cfg.data.compact_masks,
    )
    return r
