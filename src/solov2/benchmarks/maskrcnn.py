"""torchvision's Mask R-CNN R50-FPN as the same-run peer (``solov2 bench --compare maskrcnn``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from ..config import Config
from ..infer.preprocess import resize_keep_ratio_size
from ..structures import Batch
from .options import BenchOptions
from .ours import LR, train_loop
from .timing import Step, autocast

PEER_DETECTIONS = 100  # the peer always pastes this many masks (score_thresh 0)


def peer_model(device: torch.device) -> nn.Module:
    """torchvision Mask R-CNN R50-FPN, 91 classes, random init, built as ``maskrcnn_resnet50_fpn``
    builds it around an ImageNet backbone: frozen BatchNorm, stem + layer1 frozen, like our R50
    presets (``weights_backbone=None`` alone would train every BatchNorm and stage)."""
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
    return MaskRCNN(backbone, num_classes=91).to(device)


def infer_step(
    opts: BenchOptions, cfg: Config, device: torch.device, sets: list[list[Tensor]]
) -> Step:
    """float [0, 1] images at the original size; its transform resizes to our test size;
    score threshold 0 and ``PEER_DETECTIONS`` pasted masks per image."""
    net: Any = peer_model(device).eval()  # torchvision detection models are untyped
    h, w = (int(v) for v in sets[0][0].shape[-2:])
    nh, nw = resize_keep_ratio_size(h, w, cfg.data.test_scale)
    net.transform.min_size, net.transform.max_size = (min(nh, nw),), max(nh, nw)
    net.roi_heads.score_thresh, net.roi_heads.detections_per_img = 0.0, PEER_DETECTIONS

    @torch.inference_mode()
    def step(i: int) -> Any:
        imgs = [im.float().div_(255) for im in sets[i % len(sets)]]
        with autocast(device, opts.peer_dtype):
            return net(imgs)

    return step


def time_train(
    opts: BenchOptions, cfg: Config, device: torch.device, source: Callable[[], Step]
) -> dict[str, Any]:
    """The same batches unpadded, float [0, 1], labels + 1; the peer's resize disabled (batches
    arrive at their training size, as ours get them)."""
    net: Any = peer_model(device)  # torchvision detection models are untyped
    net.transform.resize = lambda image, target=None: (image, target)
    opt = torch.optim.SGD(
        [p for p in net.parameters() if p.requires_grad],
        lr=LR,
        momentum=cfg.solver.momentum,
        weight_decay=cfg.solver.weight_decay,
    )

    def loss_fn(b: Batch) -> dict[str, Tensor]:
        images, targets = [], []
        for i, (h, w) in enumerate(b.image_sizes.tolist()):
            images.append(b.images[i, :, :h, :w].float().div_(255))
            assert b.targets is not None  # training batches
            t = b.targets[i]
            masks = t.mask_tensor[:, :h, :w]
            targets.append({"boxes": t.boxes, "labels": t.labels + 1, "masks": masks})
        with autocast(device, opts.peer_dtype):
            return net(images, targets)

    return train_loop(net, opt, loss_fn, source(), cfg, device, opts)
