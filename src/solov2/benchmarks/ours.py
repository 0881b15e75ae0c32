"""Our SOLOv2 in ``solov2 bench``: the model, the head tweak that gives post-processing a trained
model's work, and the timed inference pipeline and training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..infer.fast import FastModel
from ..infer.preprocess import preprocess_images
from ..model import SOLOv2, build_model
from ..ops.dynamic import flatten_levels
from ..ops.masks import points_nms
from ..postprocess import PostProcessor
from ..structures import Batch
from ..train.setup import compile_for_training
from ..train.step import build_optimizer, train_step
from .options import BenchOptions
from .timing import Step, autocast, time_loop

TARGET_CANDIDATES = 100  # (cell, class) pairs passing score_thr per image, ours (infer)
CATE_LOGIT_STD = 4.0  # spread of each class's logits: scores from score_thr up to ~1
MASK_LOGIT_STD = 4.0  # spread of dynamic-mask logits: crisp masks
LR = 0.01


def _local_max(probs: Tensor, cfg: Config) -> Tensor:
    """``probs`` after the points NMS when the config's post-processing applies it."""
    return points_nms(probs) if cfg.model.test.points_nms else probs


def ours_model(cfg: Config, device: torch.device, channels_last: bool) -> SOLOv2:
    """``build_model(cfg)``, seeded from ``cfg.solver.seed``, on ``device``."""
    torch.manual_seed(cfg.solver.seed)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model = build_model(cfg)
    # memory_format is a keyword Module.to takes, missing from torch's typed overloads
    model.to(device, memory_format=fmt)  # type: ignore[call-overload]
    return model


@torch.inference_mode()
def balance_work(
    model: SOLOv2,
    cfg: Config,
    batches: list[tuple[Tensor, Tensor]],
    amp: str,
    target: float = TARGET_CANDIDATES,
) -> None:
    """Tweak a random-init head so post-processing does a trained model's work: ``solo_kernel``
    gives crisp masks of ~10% of the image; each class's logits get mean 0, std ``CATE_LOGIT_STD``
    and a common shift (bisection over the ``(images, sizes)`` batches) so that ~``target``
    (cell, class) pairs per image pass ``score_thr``."""
    cate, kern = model.head.solo_cate, model.head.solo_kernel
    assert cate.bias is not None and kern.bias is not None  # nn.Conv2d(bias=True)
    with autocast(batches[0][0].device, amp):
        outs = [model(x, sizes) for x, sizes in batches]
    # masks: drop the kernels' component along the mean feature (features are >= 0: masks would
    # be all on or all off), scale to logit std MASK_LOGIT_STD, offset to ~10% coverage
    feats = outs[0].mask_feats[0].float().flatten(1)  # [E, P] of image 0
    e = feats.shape[0]  # kernels may carry relative-coordinate entries after their first E
    w, wb = kern.weight[:e], kern.bias[:e]
    mean = feats.mean(1)
    u = mean / mean.norm().clamp(min=1e-6)
    w.sub_(u.view(-1, 1, 1, 1) * (u.view(-1, 1, 1, 1) * w).sum(0))
    wb.sub_(u * (u @ wb))
    kernels = flatten_levels(outs[0].kernel_preds)[0].float()[:, :e]  # [T, E]
    kernels = kernels - (kernels @ u)[:, None] * u  # as the projected head would predict
    idx = torch.randperm(kernels.shape[0])[:256].to(kernels.device)
    k = MASK_LOGIT_STD / max(float((kernels[idx] @ (feats - mean[:, None])).std()), 1e-6)
    w.mul_(k)
    wb.mul_(k).sub_(1.3 * MASK_LOGIT_STD * u / mean.norm().clamp(min=1e-6))
    bias = cate.bias.view(1, -1, 1, 1)
    raw = [
        torch.cat([o.cate_logits[lv].float() for o in outs]) - bias  # W x per level
        for lv in range(len(outs[0].cate_logits))
    ]
    flat = torch.cat([x.transpose(0, 1).flatten(1) for x in raw], 1)  # [C, cells]
    mu, scale = flat.mean(1), CATE_LOGIT_STD / flat.std(1).clamp(min=1e-6)
    z = [(x - mu.view(bias.shape)) * scale.view(bias.shape) for x in raw]

    def count(shift: float) -> float:
        n = sum(
            int((_local_max((x + shift).sigmoid(), cfg) > cfg.model.test.score_thr).sum())
            for x in z
        )
        return n / z[0].shape[0]

    lo, hi = -64.0, 64.0
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    cate.weight.mul_(scale.view(-1, 1, 1, 1))
    cate.bias.copy_(hi - mu * scale)


def infer_work(opts: BenchOptions, cfg: Config, model: SOLOv2, sets: list[list[Tensor]]) -> None:
    """Tweak ``model``'s head (:func:`balance_work`) on the preprocessed ``sets``."""
    balance_work(
        model,
        cfg,
        [preprocess_images(s, cfg.data.test_scale, cfg.data.size_divisor)[:2] for s in sets],
        opts.amp,
    )


def infer_step(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    sets: list[list[Tensor]],
    model: SOLOv2,
    work: dict[str, float],
) -> Step:
    """Our inference pipeline (resize, pad, network, post-processing to the original size) on
    the tweaked ``model`` as a step over ``sets``; ``work`` gets what it does (candidates and
    detections per image, counted eagerly before any ``--fast`` wrapping)."""
    model.eval()
    post = PostProcessor.from_config(cfg)
    fwd: Callable[..., Any] = torch.compile(model) if opts.compile else model
    fmt = torch.channels_last if opts.channels_last else torch.contiguous_format

    def run(imgs: list[Tensor], net: Callable[..., Any]) -> tuple[Any, list[Any]]:
        x, sizes, orig = preprocess_images(imgs, cfg.data.test_scale, cfg.data.size_divisor)
        x = x.contiguous(memory_format=fmt)
        with autocast(device, opts.amp):
            out = net(x, sizes)
        return out, post(out, sizes, orig)

    cands = dets = 0
    with torch.inference_mode():
        for imgs in sets:  # the work the tweak produces (untimed, eager)
            out, preds = run(imgs, model)
            cands += sum(
                int((_local_max(c.float().sigmoid(), cfg) > post.cfg.score_thr).sum())
                for c in out.cate_logits
            )
            dets += sum(len(p) for p in preds)
    n = len(sets) * len(sets[0])
    work.update(candidates_per_image=cands / n, detections_per_image=dets / n)
    if opts.fast:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.amp)
        fwd = FastModel(
            model,
            dtype=dtype,
            channels_last=True,
            cuda_graphs=device.type == "cuda",
            compile=opts.compile,
        )

    @torch.inference_mode()
    def step(i: int) -> list[Any]:
        return run(sets[i % len(sets)], fwd)[1]

    return step


def train_loop(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: Callable[[Batch], dict[str, Tensor]],
    get: Step,
    cfg: Config,
    device: torch.device,
    opts: BenchOptions,
) -> dict[str, Any]:
    """Time full steps: losses, backward (GradScaler for fp16, a no-op otherwise), clip, SGD."""
    params = [p for g in opt.param_groups for p in g["params"]]
    scaler = torch.amp.GradScaler(device.type, enabled=opts.amp == "fp16")

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
    return time_loop(step, opts.warmup, opts.iters, device, opts.batch_size)


def time_train(
    opts: BenchOptions,
    cfg: Config,
    device: torch.device,
    source: Callable[[], Step],
    model: SOLOv2,
) -> dict[str, Any]:
    """Time our training step (``train_step``, ``build_optimizer``); ``--compile``: static
    shapes (``compile_for_training``)."""
    fwd = compile_for_training(model) if opts.compile else model
    return train_loop(
        model,
        build_optimizer(model, cfg, LR),
        lambda b: train_step(fwd, b, cfg, opts.amp),
        source(),
        cfg,
        device,
        opts,
    )
