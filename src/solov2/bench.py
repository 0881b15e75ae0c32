"""``solov2 bench``: speed of our SOLOv2 against torchvision's Mask R-CNN, in one process.

Both are randomly initialised and timed on the same inputs, device, resolution and autocast
dtype. ``infer``: uint8 images on the device -> masks at the original size (resize, pad, network,
post-processing), both tweaked to do a trained model's post-processing work. ``train``: full
steps on synthetic batches prebuilt on the device, or on real JPEGs through the loader (``--real``).
Each iteration is timed on its own (synchronised); medians are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .config import Config, DataCfg, apply_overrides
from .engine.complexity import bench_input_size, format_complexity, model_complexity
from .errors import UserError
from .presets import get_config
from .structures import Batch, Instances

TARGET_CANDIDATES = 100  # (cell, class) pairs passing score_thr per image, ours (infer)
CATE_LOGIT_STD = 4.0  # spread of each class's logits: scores from score_thr up to ~1
MASK_LOGIT_STD = 4.0  # spread of dynamic-mask logits: crisp masks
PEER_DETECTIONS = 100  # the peer always pastes this many masks (score_thresh 0)
N_SETS = 3  # distinct image sets / batches the timed loop rotates among
LR = 0.01
Step = Callable[[int], Any]


def parse_size(text: str) -> tuple[int, int]:
    """``"800x1216"`` -> ``(800, 1216)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--size {text!r}: expected HxW, e.g. 800x1216")
    return int(parts[0]), int(parts[1])


def time_loop(step: Step, warmup: int, iters: int, device: torch.device,
              batch_size: int) -> dict[str, Any]:
    """Warm up, then time ``iters`` synchronised ``step(i)`` calls; resets the CUDA peak first."""
    if cuda := device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + max(1, iters)):
        t0 = time.perf_counter()
        step(i)
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    p10, med, p90 = torch.tensor(times, dtype=torch.float64).quantile(
        torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()  # linear interpolation
    mem = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
    return {"img_per_s": batch_size / med, "ms_per_iter_median": med * 1e3, "ms_p10": p10 * 1e3,
            "ms_p90": p90 * 1e3, "peak_mem_mb": mem, "iters": len(times)}


def bench_matrix_nms(n: int = 500, h: int = 200, w: int = 304,
                     device: torch.device | str | None = None, iters: int = 20,
                     warmup: int = 3) -> float:
    """Median milliseconds of :func:`solov2.ops.matrix_nms` on ``n`` random ``h x w`` masks."""
    from .ops import matrix_nms

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(n, h, w, generator=g) > 0.7).to(dev)
    labels = torch.randint(0, 80, (n,), generator=g).to(dev)
    scores = torch.rand(n, generator=g).to(dev)
    with torch.inference_mode():
        r = time_loop(lambda i: matrix_nms(masks, labels, scores), warmup, iters, dev, 1)
    return float(r["ms_per_iter_median"])


def _autocast(device: torch.device, amp: str) -> torch.autocast:
    from .engine.evaluate import autocast_dtype

    dtype = autocast_dtype(amp)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def synthetic_batch(b: int, h: int, w: int, num_classes: int, device: torch.device,
                    g: torch.Generator, size_divisor: int = 32) -> Batch:
    """A padded training :class:`Batch` on ``device``: random images of ``h x w``, each with
    1-8 random rectangles/ellipses (masks uint8 in the padded frame, labels, boxes)."""
    from .ops.masks import masks_to_boxes

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


def _batch_source(args: argparse.Namespace, cfg: Config, device: torch.device,
                  size: tuple[int, int]) -> Callable[[], Step]:
    """A factory of ``get(i) -> Batch on the device``, each starting from the same batches:
    ``--real``: the training loader over ``DIR``'s train split (preset train scales, one worker
    per CPU core up to 16, pinned memory, one continuous stream across epochs as in training;
    loading is timed); else prebuilt synthetic batches."""
    fmt_ = torch.channels_last if args.channels_last else torch.contiguous_format

    def fmt(b: Batch) -> Batch:
        return dataclasses.replace(b, images=b.images.contiguous(memory_format=fmt_))

    if args.real:
        from .data.loader import build_train_loader, dataset_from_config

        dcfg = DataCfg(data_root=args.real, train_split="train",
                       train_scales=[list(s) for s in cfg.data.train_scales],
                       size_divisor=cfg.data.size_divisor)
        loader = build_train_loader(dataset_from_config(dcfg, "train", train=True),
                                    args.batch_size, min(16, os.cpu_count() or 1),
                                    aspect_grouping=dcfg.aspect_grouping, seed=cfg.solver.seed,
                                    size_divisor=dcfg.size_divisor)

        def real() -> Step:
            it = loader.stream()
            return lambda i: fmt(next(it).to(device, non_blocking=True))
        return real
    g = torch.Generator().manual_seed(cfg.solver.seed)
    batches = [fmt(synthetic_batch(args.batch_size, *size, cfg.model.num_classes, device, g,
                                   cfg.data.size_divisor)) for _ in range(N_SETS)]
    return lambda: (lambda i: batches[i % len(batches)])


def _ours(cfg: Config, device: torch.device, channels_last: bool) -> nn.Module:
    from .model import build_model

    torch.manual_seed(cfg.solver.seed)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    return build_model(cfg).to(device, memory_format=fmt)  # type: ignore[call-overload]


def peer_model(device: torch.device) -> nn.Module:
    """torchvision Mask R-CNN R50-FPN, 91 classes, random init, built as ``maskrcnn_resnet50_fpn``
    builds it around an ImageNet backbone: frozen BatchNorm, stem + layer1 frozen, like our R50
    presets (``weights_backbone=None`` alone would train every BatchNorm and stage)."""
    from torchvision.models import resnet50
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=91).to(device)


@torch.inference_mode()
def balance_work(model: nn.Module, cfg: Config, batches: list[tuple[Tensor, Tensor]], amp: str,
                 target: float = TARGET_CANDIDATES) -> None:
    """Tweak a random-init head so post-processing does a trained model's work: ``solo_kernel``
    gives crisp masks of ~10% of the image; each class's logits get mean 0, std ``CATE_LOGIT_STD``
    and a common shift (bisection over the ``(images, sizes)`` batches) so that ~``target``
    (cell, class) pairs per image pass ``score_thr``."""
    from .losses import flatten_levels
    from .ops.masks import points_nms

    cate, kern = model.head.solo_cate, model.head.solo_kernel
    with _autocast(batches[0][0].device, amp):
        outs = [model(x, sizes) for x, sizes in batches]
    # masks: drop the kernels' component along the mean feature (features are >= 0: masks would
    # be all on or all off), scale to logit std MASK_LOGIT_STD, offset to ~10% coverage
    feats = outs[0].mask_feats[0].float().flatten(1)  # [E, P] of image 0
    mean = feats.mean(1)
    u = mean / mean.norm().clamp(min=1e-6)
    kern.weight.sub_(u.view(-1, 1, 1, 1) * (u.view(-1, 1, 1, 1) * kern.weight).sum(0))
    kern.bias.sub_(u * (u @ kern.bias))
    kernels = flatten_levels(outs[0].kernel_preds)[0].float()  # [T, E]
    kernels = kernels - (kernels @ u)[:, None] * u  # as the projected head would predict
    idx = torch.randperm(kernels.shape[0])[:256].to(kernels.device)
    k = MASK_LOGIT_STD / max(float((kernels[idx] @ (feats - mean[:, None])).std()), 1e-6)
    kern.weight.mul_(k)
    kern.bias.mul_(k).sub_(1.3 * MASK_LOGIT_STD * u / mean.norm().clamp(min=1e-6))
    bias = cate.bias.view(1, -1, 1, 1)
    raw = [torch.cat([o.cate_logits[lv].float() for o in outs]) - bias  # W x per level
           for lv in range(len(outs[0].cate_logits))]
    flat = torch.cat([x.transpose(0, 1).flatten(1) for x in raw], 1)  # [C, cells]
    mu, scale = flat.mean(1), CATE_LOGIT_STD / flat.std(1).clamp(min=1e-6)
    z = [(x - mu.view(bias.shape)) * scale.view(bias.shape) for x in raw]

    def count(shift: float) -> float:
        n = sum(int((points_nms((x + shift).sigmoid()) > cfg.model.test.score_thr).sum())
                for x in z)
        return n / z[0].shape[0]

    lo, hi = -64.0, 64.0
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    cate.weight.mul_(scale.view(-1, 1, 1, 1))
    cate.bias.copy_(hi - mu * scale)


def _infer(args: argparse.Namespace, cfg: Config, device: torch.device,
           sets: list[list[Tensor]], peer: bool) -> tuple[dict[str, Any], dict[str, float]]:
    """Time the inference pipeline of ours or of the peer; also the work ours does."""
    from .engine.evaluate import postprocess_cfg
    from .infer.preprocess import preprocess_images, resize_keep_ratio_size
    from .ops.masks import points_nms
    from .postprocess import postprocess

    if peer:
        net = peer_model(device).eval()
        nh, nw = resize_keep_ratio_size(*sets[0][0].shape[-2:], cfg.data.test_scale)
        net.transform.min_size, net.transform.max_size = (min(nh, nw),), max(nh, nw)
        net.roi_heads.score_thresh, net.roi_heads.detections_per_img = 0.0, PEER_DETECTIONS

        def step(i: int) -> Any:
            imgs = [im.float().div_(255) for im in sets[i % len(sets)]]
            with _autocast(device, args.amp):
                return net(imgs)

        with torch.inference_mode():
            return time_loop(step, args.warmup, args.iters, device, args.batch_size), {}

    model = _ours(cfg, device, args.channels_last).eval()
    h, pp = cfg.model.head, postprocess_cfg(cfg)
    fwd = torch.compile(model) if args.compile else model
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def run(imgs: list[Tensor], net: nn.Module) -> tuple[Any, list[Any]]:
        x, sizes, orig = preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)
        x = x.contiguous(memory_format=fmt)
        with _autocast(device, args.amp):
            out = net(x, sizes)
        return out, postprocess(out.cate_logits, out.kernel_preds, out.mask_feats, sizes, orig,
                                h.num_grids, h.strides, pp, out.candidates)

    balance_work(model, cfg, [preprocess_images(s, cfg.data.test_scale, cfg.data.size_divisor)[:2]
                              for s in sets], args.amp)
    if getattr(args, "fast", False):
        from .infer.fast import FastModel

        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
        fwd = FastModel(model, dtype=dtype, channels_last=True,
                        cuda_graphs=device.type == "cuda", compile=args.compile)
    cands = dets = 0
    with torch.inference_mode():
        for imgs in sets:  # the work the tweak produces (untimed, eager)
            out, preds = run(imgs, model)
            cands += sum(int((points_nms(c.float().sigmoid()) > pp.score_thr).sum())
                         for c in out.cate_logits)
            dets += sum(len(p) for p in preds)
        res = time_loop(lambda i: run(sets[i % len(sets)], fwd)[1], args.warmup, args.iters,
                        device, args.batch_size)
    n = len(sets) * len(sets[0])
    return res, {"candidates_per_image": cands / n, "detections_per_image": dets / n}


def _train_loop(model: nn.Module, opt: torch.optim.Optimizer,
                loss_fn: Callable[[Batch], dict[str, Tensor]], get: Step, cfg: Config,
                device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Time full steps: losses, backward (GradScaler for fp16, a no-op otherwise), clip, SGD."""
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def step(i: int) -> None:
        loss: Any = sum(loss_fn(get(i)).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        if cfg.solver.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.solver.clip_grad)
        scaler.step(opt)
        scaler.update()

    model.train()
    return time_loop(step, args.warmup, args.iters, device, args.batch_size)


def _train(args: argparse.Namespace, cfg: Config, device: torch.device,
           source: Callable[[], Step], peer: bool) -> dict[str, Any]:
    """Time training steps of ours (``train_step``, ``build_optimizer``) or of the peer."""
    from .engine.train import build_optimizer, train_step

    if not peer:
        model = _ours(cfg, device, args.channels_last)
        fwd = torch.compile(model) if args.compile else model
        return _train_loop(model, build_optimizer(model, cfg, LR),
                           lambda b: train_step(fwd, b, cfg, args.amp), source(), cfg, device,
                           args)
    net = peer_model(device)
    # batches arrive at their training size, as ours get them: the peer's resize is disabled
    net.transform.resize = lambda image, target=None: (image, target)  # type: ignore
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=LR,
                          momentum=cfg.solver.momentum, weight_decay=cfg.solver.weight_decay)

    def loss_fn(b: Batch) -> dict[str, Tensor]:  # unpadded float [0, 1] images, labels + 1
        images, targets = [], []
        for i, (h, w) in enumerate(b.image_sizes.tolist()):
            images.append(b.images[i, :, :h, :w].float().div_(255))
            t = b.targets[i]  # type: ignore[index]
            targets.append({"boxes": t.boxes, "labels": t.labels + 1, "masks": t.masks[:, :h, :w]})
        with _autocast(device, args.amp):
            return net(images, targets)

    return _train_loop(net, opt, loss_fn, source(), cfg, device, args)


def _notes(args: argparse.Namespace) -> list[str]:
    if args.mode == "infer":
        notes = [f"ours: random head tweaked for crisp ~10% masks and ~{TARGET_CANDIDATES} "
                 "candidates/image over score_thr (class logits normalised and shifted)",
                 f"peer: float [0,1] images, score_thresh 0, detections_per_img {PEER_DETECTIONS}"
                 " (always that many pasted masks), transform min/max_size = our resized size"]
    else:
        notes = ["step: forward, targets, losses, backward, clip 35, SGD lr 0.01 m 0.9 wd 1e-4; "
                 "peer: same batches unpadded, float [0,1], labels+1, its resize disabled",
                 "data: " + ("real JPEGs via build_train_loader, loading timed" if args.real
                             else f"{N_SETS} synthetic batches prebuilt on the device")]
    return notes + ["peer: frozen BN, stem+layer1 frozen; --compile (torch.compile, shapes "
                    "made dynamic after the first recompilation) and --channels-last apply to "
                    "ours only"]


def format_report(r: dict[str, Any]) -> str:
    """The readable table of a :func:`run_bench` result."""
    lines = [f"solov2 bench {r['config']} mode={r['mode']} device={r['device']} batch="
             f"{r['batch_size']} size={r['size']} amp={r['amp']} compile={r['compile']} channels_"
             f"last={r['channels_last']} torch {r['torch']} torchvision {r['torchvision']}",
             f"{'':20}{'img/s':>9}{'ms/iter':>10}{'p10':>9}{'p90':>9}{'peak MB':>9}{'iters':>7}"]
    for key, name in (("ours", "ours (SOLOv2)"), ("peer", "peer (Mask R-CNN)")):
        if s := r.get(key):
            mem = "-" if s["peak_mem_mb"] is None else f"{s['peak_mem_mb']:.0f}"
            lines.append(f"{name:20}{s['img_per_s']:9.2f}{s['ms_per_iter_median']:10.1f}"
                         f"{s['ms_p10']:9.1f}{s['ms_p90']:9.1f}{mem:>9}{s['iters']:7d}")
    if r["ratio"] is not None:
        lines.append(f"ratio ours/peer (img/s): {r['ratio']:.2f}x")
    if "matrix_nms_ms" in r:
        lines.append(f"matrix_nms, 500 masks 200x304: {r['matrix_nms_ms']:.2f} ms; ours: "
                     f"{r['candidates_per_image']:.0f} candidates, "
                     f"{r['detections_per_image']:.0f} detections per image")
    if r.get("complexity"):
        lines.append(format_complexity(r["complexity"]))
    return "\n".join(lines + [f"note: {n}" for n in r["notes"]])


def run_bench(args: argparse.Namespace) -> int:
    """``solov2 bench``: time ours (and the peer with ``--compare maskrcnn``), print a table and,
    with ``--json``, a last line with the results. Returns the exit code."""
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        raise UserError("--iters and --batch-size must be >= 1, --warmup >= 0")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    cfg = apply_overrides(get_config(args.config), list(getattr(args, "opts", None) or []))
    size = parse_size(args.size)
    r: dict[str, Any] = {
        "ours": None, "peer": None, "ratio": None, "config": cfg.name, "mode": args.mode,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "torchvision": torchvision.__version__,
        "batch_size": args.batch_size, "amp": args.amp,
        "size": f"train scales {cfg.data.train_scales}" if args.real else f"{size[0]}x{size[1]}",
        "compile": bool(args.compile), "fast": bool(getattr(args, "fast", False)),
        "channels_last": bool(args.channels_last),
        "real": args.real, "notes": _notes(args)}
    hw = bench_input_size(cfg, args.mode, size, bool(args.real))  # counted before any timing
    r["complexity"] = model_complexity(cfg, hw, args.batch_size) if hw else None
    if args.mode == "infer":
        g, b, (h, w) = torch.Generator().manual_seed(cfg.solver.seed), args.batch_size, size
        sets = []  # N_SETS lists of uint8 [3, h, w] images: smooth colour fields plus noise
        for _ in range(N_SETS):
            low = torch.rand(b, 3, max(2, h // 64), max(2, w // 64), generator=g) * 200
            img = nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
            sets.append(list((img + torch.rand(b, 3, h, w, generator=g) * 55).byte().to(device)))
        r["matrix_nms_ms"] = bench_matrix_nms(device=device, iters=args.iters, warmup=args.warmup)
        r["ours"], work = _infer(args, cfg, device, sets, peer=False)
        r.update(work)
    else:
        source = _batch_source(args, cfg, device, size)
        r["ours"] = _train(args, cfg, device, source, peer=False)
    if args.compare:
        gc.collect()
        torch.cuda.empty_cache()  # free ours before the peer (no-op without CUDA)
        r["peer"] = (_infer(args, cfg, device, sets, peer=True)[0] if args.mode == "infer"
                     else _train(args, cfg, device, source, peer=True))
    r["ratio"] = r["ours"]["img_per_s"] / r["peer"]["img_per_s"] if r["peer"] else None
    print(format_report(r), flush=True)
    if args.json:
        print(json.dumps(r), flush=True)
    return 0
