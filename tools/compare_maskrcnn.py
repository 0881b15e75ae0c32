#!/usr/bin/env python3
"""Train a SOLOv2 preset and torchvision's Mask R-CNN on the same data stream, then evaluate both
with the same COCO evaluator.

Usage::

    PYTHONPATH=src python3 tools/compare_maskrcnn.py --pairing mnv2 \\
        --data-root /work/shared/datasets/coco128_seg --iters 1000 --amp bf16 --eval-train \\
        --output-dir runs/compare_mnv2
    PYTHONPATH=src python3 tools/compare_maskrcnn.py --pairing r50 \\
        --data-root /work/shared/datasets/coco128_seg --iters 1000 --time-budget 600

Pairings:

* ``mnv2``: ``solov2_light_mnv2_448`` from torchvision's ImageNet MobileNetV2 vs Mask R-CNN on the
  same MobileNetV2 weights with an FPN on the same four taps (outputs of features 3, 6, 13, 18:
  C2..C5), the same frozen blocks (0-3) and the same BatchNorm policy (statistics frozen, affine
  trained). torchvision's ``mobilenet_backbone`` helper taps the *first* block of each stage and,
  by default, only two levels (which does not fit Mask R-CNN's 5-level anchors), so the peer's
  ``BackboneWithFPN`` is built with our taps: the two models see identical backbone features.
* ``r50``: ``solov2_r50_fpn_1x`` vs ``maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)``,
  both from random initialisation. Frozen BatchNorm on a random ResNet is degenerate, so both
  train every stage with trainable BatchNorm: ours with ``frozen_stages=0, norm_eval=False``;
  torchvision's builder already picks ``nn.BatchNorm2d`` and 5 trainable layers when no weights
  are given (checked below).
* ``tiny`` (for tests only): ``solov2_demo`` vs Mask R-CNN on a random ResNet-18 FPN (trainable
  BatchNorm), scale (96, 64), the peer shrunk (fewer proposals / RoIs / detections) for CPU speed.

Fairness (also written to ``compare.json``):

* One data stream: our train loader (preset DataCfg: scales, flip, seed) yields each batch once;
  both models step on it. The peer gets the same pixels: each image unpadded, as float [0, 1],
  normalised with its own ImageNet mean/std (numerically the same as ours) and batched by its own
  transform with zero padding to a multiple of 32; its transform's resize is a no-op (min_size /
  max_size are set to the scale for the record), so it trains on exactly our (multi-scale,
  flipped) images. Targets: boxes xyxy, labels + 1 (0 is background), masks unpadded.
* Same optimiser: SGD momentum 0.9, weight decay 1e-4 on all trainable parameters, gradient clip
  35 (L2), linear warmup 0.001 -> 1 over ``--warmup`` iterations (default min(500, iters / 10);
  SOLOv2's reference warms up over 500, torchvision's Mask R-CNN over 1000), x0.1 at 75 % and 90 %
  of the iterations (of the time budget with ``--time-budget``). Each model's reference LR scaled
  linearly to the batch (ours 0.01 * B / 16, Mask R-CNN 0.02 * B / 16) unless ``--lr`` /
  ``--peer-lr``.
* Timing: each model's step (forward, losses, backward, clip, SGD) is timed on its own, with a
  CUDA sync on both sides; loading and the host-to-device copy of the shared batch are excluded.
  ``--time-budget S`` stops each model once *its own* training time reaches S seconds (the
  faster model does more iterations; both see the same batch at the same iteration).
* Evaluation: both on our test loader's images (resized to the test scale, unpadded for the
  peer); predictions go to the original image size: ours by our post-processing, the peer's by
  its own ``postprocess`` (boxes rescaled and its 28x28 masks pasted directly at the original
  size), masks thresholded at 0.5, labels - 1. Each model keeps its own test settings (ours:
  score 0.1, Matrix NMS, 100 per image; Mask R-CNN: score 0.05, NMS 0.5, 100 per image). One
  ``CocoEvaluator`` class scores both; its bbox AP uses the boxes of the *masks* for both models
  (not Mask R-CNN's regressed boxes).

Outputs in ``--output-dir``: ``compare.json`` (settings, metrics, per-iteration losses and LRs),
``curves.png`` (loss vs iteration), ``overlays.png`` (val images: GT | ours | peer) and the COCO
results of each evaluation under ``eval/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

try:
    import solov2  # noqa: F401
except ImportError:  # running from a checkout without PYTHONPATH=src
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from solov2.config import Config, apply_overrides  # noqa: E402
from solov2.data.coco import CocoInstances  # noqa: E402
from solov2.data.io import read_image  # noqa: E402
from solov2.data.loader import (  # noqa: E402
    build_test_loader,
    build_train_loader,
    collate,
    dataset_from_config,
)
from solov2.engine.coco_eval import CocoEvaluator, write_results  # noqa: E402
from solov2.engine.evaluate import autocast_dtype, evaluate, predict_batch  # noqa: E402
from solov2.engine.train import build_optimizer, train_step  # noqa: E402
from solov2.engine.weights import load_backbone_weights  # noqa: E402
from solov2.model import build_model  # noqa: E402
from solov2.ops.masks import masks_to_boxes  # noqa: E402
from solov2.presets import get_config  # noqa: E402
from solov2.structures import Batch, Predictions  # noqa: E402

MNV2_WEIGHTS = "mobilenet_v2-b0353104.pth"
MNV2_TAPS = (3, 6, 13, 18)  # our MobileNetV2Backbone's C2..C5 (ends of stride-4/8/16/32 stages)
MNV2_FROZEN_BLOCKS = 4  # frozen_stages=1: blocks 0-3 (everything up to stride 4)


@dataclass
class Pairing:
    preset: str
    batch_size: int
    iters: int
    scale: tuple[int, int] | None = None  # (long, short) override of train/test scales
    peer_ref_lr: float = 0.02  # torchvision's reference: 0.02 @ batch 16
    peer_ref_batch: int = 16


PAIRINGS: dict[str, Pairing] = {
    "mnv2": Pairing("solov2_light_mnv2_448", batch_size=8, iters=1000),
    "dense": Pairing("solov2_light_mnv2_dense", batch_size=8, iters=1000),
    "r50": Pairing("solov2_r50_fpn_1x", batch_size=4, iters=1000),
    "tiny": Pairing("solov2_demo", batch_size=2, iters=2, scale=(96, 64)),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train SOLOv2 and torchvision Mask R-CNN on the same batches; compare COCO AP.")
    p.add_argument("--pairing", required=True, metavar="{mnv2,dense,r50}",  # + "tiny" (tests)
                   help="mnv2: solov2_light_mnv2_448 vs Mask R-CNN MobileNetV2-FPN (ImageNet); "
                        "dense: solov2_light_mnv2_dense (mask windows) vs the same peer; "
                        "r50: solov2_r50_fpn_1x vs maskrcnn_resnet50_fpn (random init)")
    p.add_argument("--data-root", required=True, help="COCO layout: annotations/, train/, val/")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations (default: 1000; with --time-budget alone: no cap)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (mnv2 8, r50 4)")
    p.add_argument("--lr", type=float, default=None,
                   help="LR of ours (and of the peer unless --peer-lr); default: each model's "
                        "reference LR scaled to the batch (ours 0.01*B/16, peer 0.02*B/16)")
    p.add_argument("--peer-lr", type=float, default=None, help="LR of Mask R-CNN")
    p.add_argument("--amp", choices=["none", "bf16"], default="none")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="linear warmup iterations (default min(500, iters / 10); 500 with "
                        "--time-budget alone). A short warmup makes SOLOv2's loss spike as the "
                        "LR peaks: docs/RESULTS.md")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop each model when its own training time reaches S seconds")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--output-dir", default="runs/compare", help="where compare.json etc. go")
    p.add_argument("--eval-train", action="store_true",
                   help="also evaluate on the train split (fitting capacity)")
    p.add_argument("--image-scale", type=int, nargs=2, metavar=("LONG", "SHORT"), default=None,
                   help="train and test scale of both models (default: the preset's)")
    p.add_argument("--backbone-weights", default=None,
                   help=f"ImageNet MobileNetV2 file for mnv2 (default: {MNV2_WEIGHTS} under "
                        "$SOLOV2_WEIGHTS_DIR, shared/weights, /work/shared/weights)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (preset default)")
    p.add_argument("--seed", type=int, default=None, help="data/init seed (preset default 42)")
    p.add_argument("--overlays", type=int, default=4, help="val images in overlays.png")
    p.add_argument("--log-period", type=int, default=20)
    p.add_argument("--verbose", action="store_true", help="our engine's INFO logs too")
    p.add_argument("--max-dets", type=int, default=100, metavar="N",
                   help="detections per image of both models (ours model.test.max_per_img, the "
                        "peer's detections_per_img) and the evaluator's maxDets (default 100, "
                        "COCO's; dense data holds more objects per image)")
    p.add_argument("opts", nargs="*", metavar="a.b=value", help="overrides of our config")
    args = p.parse_args(argv)
    if args.pairing not in PAIRINGS:
        p.error(f"--pairing: {args.pairing!r} is not one of mnv2, dense, r50")
    if args.max_dets < 1:
        p.error("--max-dets must be >= 1")
    if args.warmup is not None and args.warmup < 1:
        p.error("--warmup must be >= 1")
    if args.iters is not None and args.iters < 1:
        p.error("--iters must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        p.error("--time-budget must be > 0")
    return args


# ----------------------------------------------------------------------------------------------
# models


def find_mnv2_weights(given: str | None) -> str:
    if given:
        if not os.path.isfile(given):
            raise SystemExit(f"--backbone-weights {given}: file not found")
        return given
    dirs = [os.environ.get("SOLOV2_WEIGHTS_DIR", ""), "shared/weights", ".data/weights",
            str(Path(__file__).resolve().parents[1] / "shared" / "weights"),
            "/work/shared/weights"]
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, MNV2_WEIGHTS)):
            return os.path.join(d, MNV2_WEIGHTS)
    raise SystemExit(f"--pairing mnv2 needs the ImageNet MobileNetV2 weights: pass "
                     f"--backbone-weights PATH/{MNV2_WEIGHTS} (looked in {dirs})")


def configure_ours(pairing: str, args: argparse.Namespace) -> Config:
    pr = PAIRINGS[pairing]
    cfg = get_config(pr.preset)
    d = cfg.data
    d.data_root, d.train_split, d.val_split = args.data_root, args.train_split, args.val_split
    scale = tuple(args.image_scale) if args.image_scale else pr.scale
    if scale is not None:
        d.train_scales = [[int(scale[0]), int(scale[1])]]
        d.test_scale = [int(scale[0]), int(scale[1])]
    if args.workers is not None:
        d.workers = args.workers
    if args.seed is not None:
        cfg.solver.seed = args.seed
    cfg.solver.amp = args.amp
    cfg.solver.batch_size = args.batch_size or pr.batch_size
    cfg = apply_overrides(cfg, list(getattr(args, "opts", None) or []))
    cfg.model.test.max_per_img = int(getattr(args, "max_dets", 100))
    if pairing in ("mnv2", "dense"):
        cfg.model.backbone.weights = find_mnv2_weights(args.backbone_weights)
    elif pairing == "r50":  # random init: trainable BatchNorm and every stage (see docstring)
        cfg.model.backbone.weights = None
        cfg.model.backbone.frozen_stages = 0
        cfg.model.backbone.norm_eval = False
    return cfg


def build_ours(cfg: Config) -> nn.Module:
    model = build_model(cfg)
    if cfg.model.backbone.weights:
        load_backbone_weights(model, cfg.model.backbone.weights)
    return model


def _input_scale_transform_cls() -> type:
    """torchvision's ``GeneralizedRCNNTransform`` whose resize is a no-op: the peer sees exactly
    the images our pipeline resized (normalise + batch with padding to 32 stay its own)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class _InputScale(GeneralizedRCNNTransform):
        def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
                   ) -> tuple[Tensor, dict[str, Tensor] | None]:
            return image, target

    return _InputScale


def _set_input_scale(peer: nn.Module, scale: tuple[int, int]) -> None:
    t = peer.transform
    cls = _input_scale_transform_cls()
    peer.transform = cls(min_size=int(scale[1]), max_size=int(scale[0]),
                         image_mean=list(t.image_mean), image_std=list(t.image_std),
                         size_divisible=t.size_divisible, fixed_size=t.fixed_size)


def _mnv2_peer_backbone(weights: str) -> nn.Module:
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from solov2.engine.checkpoint import load_checkpoint

    features = mobilenet_v2(weights=None).features
    state = load_checkpoint(weights, map_location="cpu")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    # torchvision's file: features.N.* (+ classifier.*); the FPN body is features itself: N.*
    body_state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(body_state, strict=True)
    for i in range(MNV2_FROZEN_BLOCKS):
        for prm in features[i].parameters():
            prm.requires_grad_(False)
    return BackboneWithFPN(
        features, return_layers={str(t): str(k) for k, t in enumerate(MNV2_TAPS)},
        in_channels_list=[features[t].out_channels for t in MNV2_TAPS], out_channels=256,
        extra_blocks=LastLevelMaxPool())


def build_peer(pairing: str, num_classes: int, cfg: Config) -> tuple[nn.Module, bool]:
    """Mask R-CNN for ``num_classes`` foreground classes; returns ``(model, norm_eval)``."""
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    if pairing in ("mnv2", "dense"):
        assert cfg.model.backbone.weights
        peer = MaskRCNN(_mnv2_peer_backbone(cfg.model.backbone.weights),
                        num_classes=num_classes + 1)
        norm_eval = True
    elif pairing == "r50":
        peer = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                     num_classes=num_classes + 1)
        norm_eval = False
        body = peer.backbone.body
        bns = [m for m in body.modules() if "BatchNorm" in type(m).__name__]
        assert all(type(m) is nn.BatchNorm2d for m in bns), "expected trainable BatchNorm2d"
        assert all(p.requires_grad for p in body.parameters()), "expected 5 trainable layers"
    elif pairing == "tiny":
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None,
                                       norm_layer=nn.BatchNorm2d, trainable_layers=5)
        # smoke-test pairing: fewer proposals, RoI samples and detections keep CPU runs short
        peer = MaskRCNN(backbone, num_classes=num_classes + 1,
                        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
                        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                        box_batch_size_per_image=64, box_detections_per_img=20)
        norm_eval = False
    else:
        raise ValueError(pairing)
    test_scale = cfg.data.test_scale
    _set_input_scale(peer, (int(test_scale[0]), int(test_scale[1])))
    if pairing != "tiny":  # the same cap as ours (--max-dets)
        peer.roi_heads.detections_per_img = int(cfg.model.test.max_per_img)
    return peer, norm_eval


def peer_train_mode(peer: nn.Module, norm_eval: bool) -> None:
    """``train()``, keeping the backbone's BatchNorm statistics frozen when ``norm_eval`` (as our
    ``_NormEvalMixin``: running stats fixed, affine parameters of unfrozen blocks trained)."""
    peer.train()
    if norm_eval:
        for m in peer.backbone.body.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def count_params(model: nn.Module) -> tuple[int, int]:
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# the peer's inputs and outputs


def peer_inputs(batch: Batch) -> tuple[list[Tensor], list[dict[str, Tensor]] | None]:
    """Unpadded float [0, 1] images and torchvision targets (labels + 1) of a padded batch."""
    sizes = batch.image_sizes.tolist()
    images = [batch.images[i, :, :h, :w].float().div_(255.0) for i, (h, w) in enumerate(sizes)]
    if batch.targets is None:
        return images, None
    targets = []
    for (h, w), t in zip(sizes, batch.targets):
        targets.append({"boxes": t.boxes.float().reshape(-1, 4),
                        "labels": t.labels.long() + 1,
                        "masks": t.masks[:, :h, :w].contiguous()})
    return images, targets


@torch.inference_mode()
def peer_predict(peer: nn.Module, batch: Batch, device: torch.device,
                 amp: str = "none") -> list[Predictions]:
    """GeneralizedRCNN.forward, but with the original image sizes as the output frame: boxes are
    rescaled and masks pasted at the original resolution by torchvision's own postprocess."""
    batch = batch.to(device)
    images, _ = peer_inputs(batch)
    orig = [(int(h), int(w)) for h, w in batch.orig_sizes.tolist()]
    dtype = autocast_dtype(amp)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        image_list, _ = peer.transform(images)
        feats = peer.backbone(image_list.tensors)
        proposals, _ = peer.rpn(image_list, feats)
        dets, _ = peer.roi_heads(feats, proposals, image_list.image_sizes)
    for d in dets:
        d["boxes"], d["scores"] = d["boxes"].float(), d["scores"].float()
        if "masks" in d:
            d["masks"] = d["masks"].float()
    dets = peer.transform.postprocess(dets, image_list.image_sizes, orig)
    out = []
    for d, (h, w) in zip(dets, orig):
        masks = d["masks"][:, 0] > 0.5 if len(d["scores"]) else torch.zeros(
            (0, h, w), dtype=torch.bool, device=device)
        order = torch.argsort(d["scores"], descending=True)
        masks = masks[order]
        out.append(Predictions(masks, (d["labels"][order] - 1).long(), d["scores"][order],
                               masks_to_boxes(masks)))
    return out


def evaluate_peer(peer: nn.Module, loader: Any, dataset: CocoInstances, device: torch.device,
                  amp: str, output_dir: Path | None) -> dict[str, Any]:
    was = peer.training
    peer.eval()
    ev = CocoEvaluator(dataset.coco, dataset.cat_ids, dataset.class_names,
                       max_dets=peer.roi_heads.detections_per_img)
    start = time.perf_counter()
    for batch in loader:
        preds = peer_predict(peer, batch, device, amp)
        ev.process(batch.image_ids, [p.to("cpu") for p in preds])
    elapsed = time.perf_counter() - start
    peer.train(was)
    metrics = ev.evaluate()
    metrics["images"] = len(ev.image_ids)
    metrics["seconds"] = round(elapsed, 2)
    if output_dir is not None:
        write_results(output_dir, ev.results(), metrics)
    return metrics


# ----------------------------------------------------------------------------------------------
# training


def lr_factor(it: int, progress: float, warmup: int) -> float:
    """Warmup linear 0.001 -> 1 over ``warmup`` iterations; x0.1 at 75 % and 90 % progress."""
    f = 0.1 ** sum(1 for s in (0.75, 0.9) if progress >= s)
    if it < warmup:
        f *= 0.001 + (1.0 - 0.001) * it / warmup
    return f


@dataclass
class Trainee:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    base_lr: float
    params: list[nn.Parameter]
    step: Any  # (batch) -> dict[str, Tensor]
    iters: int = 0
    images: int = 0
    train_s: float = 0.0
    step_times: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    terms: dict[str, list[float | None]] = field(default_factory=dict)
    lrs: list[float] = field(default_factory=list)
    nonfinite: int = 0
    consecutive_nonfinite: int = 0
    step_mem_mb: float = 0.0
    stopped: str | None = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fin(v: float) -> float | None:
    return v if math.isfinite(v) else None


def run_step(t: Trainee, batch: Batch, it: int, progress: float, warmup: int, clip: float,
             device: torch.device) -> None:
    lr = t.base_lr * lr_factor(it, progress, warmup)
    for g in t.optimizer.param_groups:
        g["lr"] = lr
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _sync(device)
    t0 = time.perf_counter()
    losses = t.step(batch)
    loss = sum(losses.values())
    t.optimizer.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(loss))
    if finite:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(t.params, clip)
        t.optimizer.step()
    _sync(device)
    dt = time.perf_counter() - t0
    if cuda:
        t.step_mem_mb = max(t.step_mem_mb,
                            (torch.cuda.max_memory_allocated(device) - base) / 2**20)
    t.train_s += dt
    t.step_times.append(dt)
    t.iters += 1
    t.images += int(batch.images.shape[0])
    t.lrs.append(lr)
    t.losses.append(_fin(float(loss.detach())))
    for k, v in losses.items():
        t.terms.setdefault(k, []).append(_fin(float(v.detach())))
    if finite:
        t.consecutive_nonfinite = 0
    else:
        t.nonfinite += 1
        t.consecutive_nonfinite += 1
        print(f"  {t.name}: iteration {it + 1}: non-finite loss, step skipped", flush=True)
        if t.consecutive_nonfinite >= 20:
            t.stopped = f"diverged at iteration {it + 1} (20 consecutive non-finite losses)"


def train_both(ours: Trainee, peer: Trainee, loader: Any, max_iters: int | None,
               budget: float | None, device: torch.device, log_period: int,
               clip: float = 35.0, warmup: int | None = None) -> dict[str, Any]:
    return train_all((ours, peer), loader, max_iters, budget, device, log_period, clip, warmup)


def train_all(trainees: Sequence[Trainee], loader: Any, max_iters: int | None,
              budget: float | None, device: torch.device, log_period: int,
              clip: float = 35.0, warmup: int | None = None) -> dict[str, Any]:
    """Every trainee steps on each batch of one data stream (``train_both`` for two)."""
    cap = max_iters if max_iters is not None else 10**12
    warmup = max(1, min(500, cap // 10) if warmup is None else warmup)
    it, epoch, data_s = 0, 0, 0.0
    t_start = time.perf_counter()
    done = False
    while not done:
        loader.set_epoch(epoch)
        t_data = time.perf_counter()
        for batch in loader:
            for t in trainees:
                if t.stopped is None and budget is not None and t.train_s >= budget:
                    t.stopped = f"time budget {budget:g} s reached after {t.iters} iterations"
            if all(t.stopped for t in trainees):
                done = True
                break
            batch = batch.to(device, non_blocking=True)
            _sync(device)
            data_s += time.perf_counter() - t_data
            for t in trainees:
                if t.stopped is None:
                    progress = it / cap
                    if budget is not None:  # the schedule follows the budget (or the cap)
                        progress = max(progress, t.train_s / budget)
                    run_step(t, batch, it, progress, warmup, clip, device)
            it += 1
            if it % log_period == 0 or it == cap:
                parts = [f"iter {it}" + (f"/{cap}" if max_iters is not None else "")]
                for t in trainees:
                    last = t.losses[-1] if t.losses else None
                    parts.append(f"{t.name}: loss {last if last is None else round(last, 4)} "
                                 f"lr {t.lrs[-1] if t.lrs else 0:.3g} train {t.train_s:.1f}s")
                print("  " + "  |  ".join(parts), flush=True)
            if it >= cap or all(t.stopped for t in trainees):
                done = True
                break
            t_data = time.perf_counter()
        epoch += 1
    for t in trainees:
        if t.stopped is None:
            t.stopped = f"{t.iters} iterations done"
    return {"iterations_run": it, "epochs_started": epoch, "warmup_iters": warmup,
            "data_s": round(data_s, 3), "loop_wall_s": round(time.perf_counter() - t_start, 3)}


# ----------------------------------------------------------------------------------------------
# figures


def plot_curves(ours: Trainee, peer: Trainee, path: Path, labels: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, t, label in zip(axes, (ours, peer), labels):
        xs = list(range(1, len(t.losses) + 1))
        ys = [float("nan") if v is None else v for v in t.losses]
        ax.plot(xs, ys, lw=0.8, alpha=0.5, label="total loss")
        k = max(1, len(ys) // 50)
        if k > 1:
            sm = [statistics.fmean([y for y in ys[max(0, i - k + 1):i + 1] if y == y] or [0.0])
                  for i in range(len(ys))]
            ax.plot(xs, sm, lw=1.6, label=f"moving mean ({k})")
        for name, vals in t.terms.items():
            ax.plot(xs, [float("nan") if v is None else v for v in vals], lw=0.6, alpha=0.35,
                    label=name)
        ax.set_title(label)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overlays(ours_model: nn.Module, peer_model: nn.Module, cfg: Config,
                  val_set: CocoInstances, device: torch.device, amp: str, n: int, path: Path,
                  labels: tuple[str, str]) -> list[int]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from solov2.infer.visualize import draw_predictions

    raw = CocoInstances(val_set.json_path, val_set.image_dir, None, train=False)
    coco = val_set.coco
    idx = [i for i, iid in enumerate(val_set.image_ids)
           if coco.getAnnIds(imgIds=[iid], iscrowd=False)][:n] or [0]
    batch = collate([val_set[i] for i in idx], size_divisor=cfg.data.size_divisor,
                    with_targets=False)
    was = ours_model.training
    ours_model.eval()
    ours_preds = predict_batch(ours_model, batch, cfg, device, amp)
    ours_model.train(was)
    was = peer_model.training
    peer_model.eval()
    peer_preds = peer_predict(peer_model, batch, device, amp)
    peer_model.train(was)
    names = val_set.class_names
    fig, axes = plt.subplots(len(idx), 3, figsize=(15, 4.2 * len(idx)), squeeze=False)
    for row, i in enumerate(idx):
        sample = raw[i]
        image = read_image(raw.image_path(i))
        inst = sample.instances
        gt = Predictions(inst.masks.bool(), inst.labels, torch.ones(len(inst)), inst.boxes)
        panels = [draw_predictions(image, gt, names, score_thr=0.0),
                  draw_predictions(image, ours_preds[row].to("cpu"), names, score_thr=0.3),
                  draw_predictions(image, peer_preds[row].to("cpu"), names, score_thr=0.3)]
        for col, (img, title) in enumerate(zip(panels, ("ground truth", *labels))):
            ax = axes[row][col]
            ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_title(f"{title} (image {sample.image_id})" if col == 0 else
                         f"{title} (score >= 0.3)", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return [int(val_set.image_ids[i]) for i in idx]


# ----------------------------------------------------------------------------------------------
# report


def _m(metrics: dict[str, Any] | None, task: str, key: str) -> float | None:
    if not metrics:
        return None
    v = metrics.get(task, {}).get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def format_report(rows: list[dict[str, Any]], eval_train: bool) -> str:
    cols = ["model", "params(M)", "iters", "train s", "img/s", "val segm AP", "AP50", "AP75",
            "val bbox AP"]
    if eval_train:
        cols += ["train segm AP", "train bbox AP"]

    def f(v: Any, nd: int = 1) -> str:
        return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    table = [cols]
    for r in rows:
        v, tr = r["val"], r.get("train_eval")
        line = [r["model"], f(r["params"] / 1e6, 2), f(r["iters"]), f(r["train_s"], 1),
                f(r["img_per_s"], 2), f(_m(v, "segm", "AP")), f(_m(v, "segm", "AP50")),
                f(_m(v, "segm", "AP75")), f(_m(v, "bbox", "AP"))]
        if eval_train:
            line += [f(_m(tr, "segm", "AP")), f(_m(tr, "bbox", "AP"))]
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    out = []
    for j, row in enumerate(table):
        out.append(" | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                              for i, c in enumerate(row)))
        if j == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log = logging.getLogger("solov2")
    level = log.level
    if args.verbose:
        from solov2.engine.log import setup_logger

        setup_logger(None)
    else:  # our evaluate() logs its full per-category tables at INFO
        log.setLevel(logging.WARNING)
    try:
        return _run(args)
    finally:
        log.setLevel(level)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    t_script = time.perf_counter()
    device = _device(args.device)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pr = PAIRINGS[args.pairing]
    cfg = configure_ours(args.pairing, args)
    s = cfg.solver
    max_iters = args.iters if args.iters is not None else (
        None if args.time_budget is not None else pr.iters)
    batch_size = s.batch_size

    train_set = dataset_from_config(cfg.data, "train", train=True)
    names = list(train_set.class_names)
    cfg.model.num_classes, cfg.data.class_names = len(names), names
    loader = build_train_loader(train_set, batch_size, cfg.data.workers,
                                aspect_grouping=cfg.data.aspect_grouping, seed=s.seed,
                                size_divisor=cfg.data.size_divisor)
    val_set = dataset_from_config(cfg.data, "val", train=False)
    val_loader = build_test_loader(val_set, batch_size, cfg.data.workers,
                                   size_divisor=cfg.data.size_divisor,
                                   test_scale=cfg.data.test_scale)

    torch.manual_seed(s.seed)
    ours_model = build_ours(cfg).to(device)
    torch.manual_seed(s.seed)
    peer_model, peer_norm_eval = build_peer(args.pairing, len(names), cfg)
    peer_model.to(device)
    ours_model.train()
    peer_train_mode(peer_model, peer_norm_eval)

    ours_lr = args.lr if args.lr is not None else s.base_lr * batch_size / s.reference_batch
    if args.peer_lr is not None:
        peer_lr = args.peer_lr
    elif args.lr is not None:
        peer_lr = args.lr
    else:
        peer_lr = pr.peer_ref_lr * batch_size / pr.peer_ref_batch
    ours_opt = build_optimizer(ours_model, cfg, ours_lr)
    peer_params = [p for p in peer_model.parameters() if p.requires_grad]
    peer_opt = torch.optim.SGD(peer_params, lr=peer_lr, momentum=s.momentum,
                               weight_decay=s.weight_decay)
    amp_dtype = autocast_dtype(args.amp)

    def peer_step(batch: Batch) -> dict[str, Tensor]:
        images, targets = peer_inputs(batch)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            losses = peer_model(images, targets)
        return {k: v.float() for k, v in losses.items()}

    ours = Trainee(cfg.name, ours_model, ours_opt, ours_lr,
                   [p for g in ours_opt.param_groups for p in g["params"]],
                   lambda b: train_step(ours_model, b, cfg, args.amp))
    peer_name = {"mnv2": "maskrcnn_mobilenet_v2_fpn", "dense": "maskrcnn_mobilenet_v2_fpn",
                 "r50": "maskrcnn_resnet50_fpn",
                 "tiny": "maskrcnn_resnet18_fpn"}[args.pairing]
    peer = Trainee(peer_name, peer_model, peer_opt, peer_lr, peer_params, peer_step)
    p_ours, p_peer = count_params(ours_model), count_params(peer_model)

    scales = cfg.data.train_scales
    print(f"compare {args.pairing}: {ours.name} vs {peer.name} on {args.data_root} "
          f"({len(train_set)} train / {len(val_set)} val images, {len(names)} classes)")
    print(f"  device {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"amp {args.amp}, batch {batch_size}, iters "
          f"{max_iters if max_iters is not None else 'no cap'}"
          f"{f', time budget {args.time_budget:g} s per model' if args.time_budget else ''}")
    print(f"  train scales {scales}, flip {cfg.data.flip_prob}, test scale {cfg.data.test_scale}")
    print(f"  lr: {ours.name} {ours_lr:.5g}, {peer.name} {peer_lr:.5g} (SGD m 0.9, wd 1e-4, "
          f"clip 35, warmup 0.001 -> 1, x0.1 at 75%/90%)")
    print(f"  params: {ours.name} {p_ours[0] / 1e6:.2f}M ({p_ours[1] / 1e6:.2f}M trainable), "
          f"{peer.name} {p_peer[0] / 1e6:.2f}M ({p_peer[1] / 1e6:.2f}M trainable)", flush=True)

    loop = train_both(ours, peer, loader, max_iters, args.time_budget, device,
                      max(1, args.log_period), warmup=args.warmup)

    labels = (ours.name, peer.name)
    results: dict[str, dict[str, Any]] = {}
    for t, label in ((ours, "ours"), (peer, "peer")):
        steady = t.step_times[len(t.step_times) // 5:] or t.step_times
        results[label] = {
            "model": t.name, "params": count_params(t.model)[0],
            "trainable_params": count_params(t.model)[1], "lr": t.base_lr, "iters": t.iters,
            "images": t.images, "train_s": round(t.train_s, 3),
            "img_per_s": t.images / t.train_s if t.train_s > 0 else None,
            "img_per_s_median_step": (batch_size / statistics.median(steady)) if steady else None,
            "step_mem_mb": round(t.step_mem_mb, 1) if device.type == "cuda" else None,
            "nonfinite_steps": t.nonfinite, "stopped": t.stopped,
        }

    print("evaluating on val ...", flush=True)
    results["ours"]["val"] = evaluate(ours_model, val_loader, val_set, cfg, device, amp=args.amp,
                                      output_dir=out / "eval" / "ours_val", progress=False)
    results["peer"]["val"] = evaluate_peer(peer_model, val_loader, val_set, device, args.amp,
                                           out / "eval" / "peer_val")
    if args.eval_train:
        print("evaluating on train ...", flush=True)
        tr_set = dataset_from_config(cfg.data, "train", train=False)
        tr_loader = build_test_loader(tr_set, batch_size, cfg.data.workers,
                                      size_divisor=cfg.data.size_divisor,
                                      test_scale=cfg.data.test_scale)
        results["ours"]["train_eval"] = evaluate(
            ours_model, tr_loader, tr_set, cfg, device, amp=args.amp,
            output_dir=out / "eval" / "ours_train", progress=False)
        results["peer"]["train_eval"] = evaluate_peer(peer_model, tr_loader, tr_set, device,
                                                      args.amp, out / "eval" / "peer_train")

    plot_curves(ours, peer, out / "curves.png", labels)
    overlay_ids = plot_overlays(ours_model, peer_model, cfg, val_set, device, args.amp,
                                max(1, args.overlays), out / "overlays.png", labels)

    report = format_report([results["ours"], results["peer"]], args.eval_train)
    print()
    print(report)
    for label in ("ours", "peer"):
        r = results[label]
        print(f"  {r['model']}: {r['stopped']}; median-step img/s "
              f"{r['img_per_s_median_step'] or 0:.2f}"
              + (f", step memory {r['step_mem_mb']:.0f} MB" if r["step_mem_mb"] else ""))

    summary = {
        "pairing": args.pairing,
        "args": vars(args),
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": __import__("torchvision").__version__, "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
        },
        "settings": {
            "batch_size": batch_size, "max_iters": max_iters, "time_budget_s": args.time_budget,
            "amp": args.amp, "train_scales": scales, "test_scale": cfg.data.test_scale,
            "flip_prob": cfg.data.flip_prob, "seed": s.seed, "lr": {"ours": ours_lr,
                                                                    "peer": peer_lr},
            "momentum": s.momentum, "weight_decay": s.weight_decay, "clip_grad": 35.0,
            "warmup": "linear 0.001 -> 1", "lr_steps": "x0.1 at 75% and 90% of the run",
            "ours_backbone": {"name": cfg.model.backbone.name,
                              "weights": cfg.model.backbone.weights,
                              "frozen_stages": cfg.model.backbone.frozen_stages,
                              "norm_eval": cfg.model.backbone.norm_eval},
            "peer_backbone_norm_eval": peer_norm_eval,
            "peer_test": {"box_score_thresh": peer_model.roi_heads.score_thresh,
                          "box_nms_thresh": peer_model.roi_heads.nms_thresh,
                          "detections_per_img": peer_model.roi_heads.detections_per_img,
                          "mask_thresh": 0.5},
            "ours_test": {"score_thr": cfg.model.test.score_thr,
                          "max_per_img": cfg.model.test.max_per_img,
                          "mask_thr": cfg.model.test.mask_thr},
        },
        "fairness": [
            "one data stream: each batch of our train loader (preset scales/flip, same seed) is "
            "stepped on by both models",
            "peer input: the same resized pixels, unpadded, float [0,1], its own ImageNet "
            "normalisation (= ours), padded to 32 by its transform; its resize is a no-op",
            "same SGD, weight decay, clip 35, warmup and step schedule; LR per model's "
            "reference scaled to the batch unless --lr/--peer-lr",
            "timing per model step with CUDA sync; data loading/copy excluded",
            "evaluation on the same test-scale images; outputs at original size (peer: "
            "torchvision postprocess pastes masks at original size); masks > 0.5; one "
            "CocoEvaluator; bbox AP from mask boxes for both",
        ],
        "loop": loop,
        "results": {k: {kk: vv for kk, vv in v.items()} for k, v in results.items()},
        "curves": {
            label: {"loss": t.losses, "terms": t.terms, "lr": t.lrs,
                    "step_s": [round(x, 5) for x in t.step_times]}
            for t, label in ((ours, "ours"), (peer, "peer"))
        },
        "overlay_image_ids": overlay_ids,
        "script_wall_s": round(time.perf_counter() - t_script, 2),
        "table": report,
    }
    (out / "compare.json").write_text(json.dumps(_json_safe(summary), indent=1) + "\n")
    print(f"wrote {out / 'compare.json'}, {out / 'curves.png'}, {out / 'overlays.png'} "
          f"({summary['script_wall_s']:.1f} s)")
    return summary


if __name__ == "__main__":
    main()
