"""Both models of a comparison: the pairings, our config and model, the peer Mask R-CNN (built
on our backbone taps), the peer's inputs and outputs, and its evaluation by our COCO evaluator."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from solov2.checkpoint.weights import load_backbone_weights
from solov2.config import Config, apply_overrides
from solov2.data.coco import CocoInstances
from solov2.evaluation.coco_eval import CocoEvaluator, write_results
from solov2.model import build_model
from solov2.ops.masks import masks_to_boxes
from solov2.presets import get_config
from solov2.runtime.device import autocast_dtype
from solov2.structures import Batch, Predictions

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


def find_mnv2_weights(given: str | None) -> str:
    if given:
        if not os.path.isfile(given):
            raise SystemExit(f"--backbone-weights {given}: file not found")
        return given
    dirs = [
        os.environ.get("SOLOV2_WEIGHTS_DIR", ""),
        "shared/weights",
        ".data/weights",
        str(Path(__file__).resolve().parents[2] / "shared" / "weights"),
        "/work/shared/weights",
    ]
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, MNV2_WEIGHTS)):
            return os.path.join(d, MNV2_WEIGHTS)
    raise SystemExit(
        f"--pairing mnv2 needs the ImageNet MobileNetV2 weights: pass "
        f"--backbone-weights PATH/{MNV2_WEIGHTS} (looked in {dirs})"
    )


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
        def resize(
            self, image: Tensor, target: dict[str, Tensor] | None = None
        ) -> tuple[Tensor, dict[str, Tensor] | None]:
            return image, target

    return _InputScale


def _set_input_scale(peer: nn.Module, scale: tuple[int, int]) -> None:
    t = peer.transform
    cls = _input_scale_transform_cls()
    peer.transform = cls(
        min_size=int(scale[1]),
        max_size=int(scale[0]),
        image_mean=list(t.image_mean),
        image_std=list(t.image_std),
        size_divisible=t.size_divisible,
        fixed_size=t.fixed_size,
    )


def _mnv2_peer_backbone(weights: str) -> nn.Module:
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    from solov2.checkpoint import load_checkpoint

    features = mobilenet_v2(weights=None).features
    state = load_checkpoint(weights, map_location="cpu")
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
    # torchvision's file: features.N.* (+ classifier.*); the FPN body is features itself: N.*
    body_state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    features.load_state_dict(body_state, strict=True)
    for i in range(MNV2_FROZEN_BLOCKS):
        for prm in features[i].parameters():
            prm.requires_grad_(False)
    return BackboneWithFPN(
        features,
        return_layers={str(t): str(k) for k, t in enumerate(MNV2_TAPS)},
        in_channels_list=[features[t].out_channels for t in MNV2_TAPS],
        out_channels=256,
        extra_blocks=LastLevelMaxPool(),
    )


def build_peer(pairing: str, num_classes: int, cfg: Config) -> tuple[nn.Module, bool]:
    """Mask R-CNN for ``num_classes`` foreground classes; returns ``(model, norm_eval)``."""
    from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    if pairing in ("mnv2", "dense"):
        assert cfg.model.backbone.weights
        peer = MaskRCNN(
            _mnv2_peer_backbone(cfg.model.backbone.weights), num_classes=num_classes + 1
        )
        norm_eval = True
    elif pairing == "r50":
        peer = maskrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=num_classes + 1
        )
        norm_eval = False
        body = peer.backbone.body
        bns = [m for m in body.modules() if "BatchNorm" in type(m).__name__]
        assert all(type(m) is nn.BatchNorm2d for m in bns), "expected trainable BatchNorm2d"
        assert all(p.requires_grad for p in body.parameters()), "expected 5 trainable layers"
    elif pairing == "tiny":
        backbone = resnet_fpn_backbone(
            backbone_name="resnet18", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
        )
        # smoke-test pairing: fewer proposals, RoI samples and detections keep CPU runs short
        peer = MaskRCNN(
            backbone,
            num_classes=num_classes + 1,
            rpn_pre_nms_top_n_train=200,
            rpn_post_nms_top_n_train=100,
            rpn_pre_nms_top_n_test=100,
            rpn_post_nms_top_n_test=50,
            box_batch_size_per_image=64,
            box_detections_per_img=20,
        )
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
        targets.append(
            {
                "boxes": t.boxes.float().reshape(-1, 4),
                "labels": t.labels.long() + 1,
                "masks": t.masks[:, :h, :w].contiguous(),
            }
        )
    return images, targets


@torch.inference_mode()
def peer_predict(
    peer: nn.Module, batch: Batch, device: torch.device, amp: str = "none"
) -> list[Predictions]:
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
        masks = (
            d["masks"][:, 0] > 0.5
            if len(d["scores"])
            else torch.zeros((0, h, w), dtype=torch.bool, device=device)
        )
        order = torch.argsort(d["scores"], descending=True)
        masks = masks[order]
        out.append(
            Predictions(
                masks, (d["labels"][order] - 1).long(), d["scores"][order], masks_to_boxes(masks)
            )
        )
    return out


def evaluate_peer(
    peer: nn.Module,
    loader: Any,
    dataset: CocoInstances,
    device: torch.device,
    amp: str,
    output_dir: Path | None,
) -> dict[str, Any]:
    was = peer.training
    peer.eval()
    ev = CocoEvaluator(
        dataset.coco,
        dataset.cat_ids,
        dataset.class_names,
        max_dets=peer.roi_heads.detections_per_img,
    )
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
