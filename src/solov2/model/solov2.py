"""The SOLOv2 network: normalise -> backbone -> FPN -> (category, kernel) head + mask features.

``SOLOv2.forward`` returns raw head outputs only. Target assignment (:mod:`solov2.targets`),
losses (:mod:`solov2.losses`) and post-processing (:mod:`solov2.postprocess`) are separate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .backbone import Backbone
from .fpn import FPN
from .head import MaskFeatHead, SOLOv2Head


@dataclass
class HeadOutputs:
    """Raw outputs of one forward pass.

    Attributes:
        cate_logits: per level ``[B, C, S, S]`` category logits (sigmoid -> scores).
        kernel_preds: per level ``[B, E, S, S]`` dynamic 1x1 kernels.
        mask_feats: ``[B, E, Hp/4, Wp/4]`` unified mask features.
        candidates: optionally, post-processing's first, static-shape stage already computed
            (:func:`solov2.postprocess.candidate_inputs`: float32 ``[B, T, C]`` scores after
            points NMS and ``[B, T, E]`` kernels); set by ``FastModel`` inside its CUDA graph.
    """

    cate_logits: list[Tensor]
    kernel_preds: list[Tensor]
    mask_feats: Tensor
    candidates: tuple[Tensor, Tensor] | None = None


def _fills_frame(image_sizes: Tensor, hp: int, wp: int) -> bool:
    """Every image is ``hp x wp`` (no padding to zero), as far as the host knows without a sync
    (sizes on the CPU, eager)."""
    if (
        torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or image_sizes.device.type != "cpu"
    ):
        return False
    return bool((image_sizes == torch.tensor([hp, wp])).all())


class SOLOv2(nn.Module):
    """SOLOv2 instance segmentation network.

    Args:
        backbone: returns ``[C2, C3, C4, C5]`` and has ``out_channels``.
        neck: FPN returning ``[P2..P6]``.
        head: :class:`SOLOv2Head`.
        mask_feat_head: :class:`MaskFeatHead`.
        pixel_mean, pixel_std: RGB normalisation on the 0-255 scale.
    """

    pixel_mean: Tensor  # buffers [1, 3, 1, 1] (registered in __init__)
    pixel_std: Tensor

    def __init__(
        self,
        backbone: Backbone,
        neck: FPN,
        head: SOLOv2Head,
        mask_feat_head: MaskFeatHead,
        pixel_mean: list[float],
        pixel_std: list[float],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.mask_feat_head = mask_feat_head
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1), False)

    def normalize(self, images: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """``(x - mean) / std`` with the padding (outside ``image_sizes``) set to 0, as the
        reference pads after normalising.

        Args:
            images: ``[B, 3, Hp, Wp]`` uint8 or float RGB on the 0-255 scale.
            image_sizes: int64 ``[B, 2]`` ``(h, w)`` of the content; ``None`` = no padding.
        """
        x = (images.float() - self.pixel_mean) / self.pixel_std
        hp, wp = x.shape[-2:]
        if image_sizes is not None and not _fills_frame(image_sizes, hp, wp):
            sizes = image_sizes.to(x.device)
            rows = torch.arange(hp, device=x.device).view(1, hp, 1) < sizes[:, 0].view(-1, 1, 1)
            cols = torch.arange(wp, device=x.device).view(1, 1, wp) < sizes[:, 1].view(-1, 1, 1)
            x = x * (rows & cols).unsqueeze(1)
        return x

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> HeadOutputs:
        """Run the network.

        Args:
            images: ``[B, 3, Hp, Wp]`` RGB, uint8 or float on the 0-255 scale, ``Hp, Wp``
                multiples of 32.
            image_sizes: optional ``[B, 2]`` content sizes (the rest is padding).
        """
        x = self.normalize(images, image_sizes)
        feats = self.neck(self.backbone(x))
        cate_logits, kernel_preds = self.head(feats)
        mask_feats = self.mask_feat_head(feats)
        return HeadOutputs(cate_logits, kernel_preds, mask_feats)
