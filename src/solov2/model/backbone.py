"""Backbones on torchvision: ResNet-18/34/50/101, ResNeXt-101 64x4d (optional DCN) and MobileNetV2.

Each backbone returns the four feature maps C2..C5 (strides 4, 8, 16, 32). Module names match
torchvision (and therefore the official SOLO checkpoints after stripping ``backbone.``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models

from ..ops.dcn import ConvSpec, DeformConv2d


def resnet10(weights: None = None) -> models.ResNet:
    """ResNet-10 (one BasicBlock per stage): ours, for fast CPU demos; no ImageNet weights."""
    return models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1])


_RESNETS: dict[str, Callable[..., models.ResNet]] = {
    "resnet10": resnet10,
    "resnet18": models.resnet18,
    "resnet34": models.resnet34,
    "resnet50": models.resnet50,
    "resnet101": models.resnet101,
    "resnext101_64x4d": models.resnext101_64x4d,
}


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


class _NormEvalMixin(nn.Module):
    """Keeps every BatchNorm in eval mode when ``norm_eval`` (the reference's ``norm_eval=True``):
    running statistics are frozen while the affine parameters of unfrozen stages still train."""

    norm_eval: bool = True

    def train(self, mode: bool = True) -> _NormEvalMixin:
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class ResNetBackbone(_NormEvalMixin):
    """torchvision ResNet/ResNeXt trunk returning ``[C2, C3, C4, C5]``.

    Args:
        name: one of ``resnet10|resnet18|resnet34|resnet50|resnet101|resnext101_64x4d``.
        frozen_stages: 0 = train everything; 1 = freeze stem + layer1 (reference); k freezes
            layer1..layerk too.
        norm_eval: keep BatchNorm statistics frozen (eval mode) during training.
        dcn: ``"none"``, ``"v1"`` or ``"v2"``: deformable 3x3 conv2 in every block of C3-C5.
    """

    def __init__(
        self, name: str, frozen_stages: int = 1, norm_eval: bool = True, dcn: str = "none"
    ) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"unknown ResNet backbone {name!r}; choose from {sorted(_RESNETS)}")
        net = _RESNETS[name](weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.norm_eval = norm_eval
        expansion = 4 if name not in ("resnet10", "resnet18", "resnet34") else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        if dcn != "none":
            if expansion == 1:
                raise ValueError("DCN is supported on bottleneck ResNets only (as the reference)")
            for layer in (self.layer2, self.layer3, self.layer4):
                for block in layer:
                    c: nn.Conv2d = block.conv2
                    pad = c.padding if isinstance(c.padding, str) else c.padding[0]
                    spec = ConvSpec(3, c.stride[0], int(pad), c.dilation[0], c.groups)
                    block.conv2 = DeformConv2d(
                        c.in_channels,
                        c.out_channels,
                        spec,
                        bias=False,
                        modulated=(dcn == "v2"),
                    )
        if frozen_stages >= 1:
            _freeze(self.conv1)
            _freeze(self.bn1)
        for i in range(1, frozen_stages + 1):
            _freeze(getattr(self, f"layer{i}"))
        self.frozen_stages = frozen_stages

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]

    def load_imagenet(self, state: dict[str, Tensor]) -> None:
        """Load a torchvision ImageNet state dict (``fc.*`` ignored), strictly otherwise."""
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _load_strict(self, state)


class MobileNetV2Backbone(_NormEvalMixin):
    """torchvision MobileNetV2 ``features`` returning C2..C5 = outputs of blocks 3, 6, 13 and 18
    (24, 32, 96 and 1280 channels at strides 4, 8, 16, 32). ``frozen_stages=1`` freezes blocks
    0-3 (everything up to stride 4), matching ResNet's stem + layer1."""

    _SPLITS = (4, 7, 14, 19)

    def __init__(self, frozen_stages: int = 1, norm_eval: bool = True) -> None:
        super().__init__()
        self.features = models.mobilenet_v2(weights=None).features
        self.norm_eval = norm_eval
        self.out_channels = [24, 32, 96, 1280]
        if frozen_stages >= 1:
            upto = self._SPLITS[min(frozen_stages, 4) - 1]
            for i in range(upto):
                _freeze(self.features[i])

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        start = 0
        for end in self._SPLITS:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs

    def load_imagenet(self, state: dict[str, Tensor]) -> None:
        """Load torchvision's ``mobilenet_v2-*.pth`` (``classifier.*`` ignored), strictly."""
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        _load_strict(self, state)


def _load_strict(module: nn.Module, state: dict[str, Tensor]) -> None:
    own = module.state_dict()
    # DCN layers keep torchvision's conv2.weight name; their offset convs start from zero
    missing = [k for k in own if k not in state and ".conv_offset." not in k]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s) e.g. {unexpected[:3]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:3]}")
        raise ValueError("; ".join(parts))
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


Backbone = ResNetBackbone | MobileNetV2Backbone


def build_backbone(
    name: str, frozen_stages: int = 1, norm_eval: bool = True, dcn: str = "none"
) -> Backbone:
    """Backbone by name (see :class:`ResNetBackbone` and :class:`MobileNetV2Backbone`), in
    training mode with ``norm_eval`` applied (a new module's BatchNorms would otherwise use and
    update batch statistics until the first ``.train()`` call)."""
    bb: Backbone
    if name == "mobilenet_v2":
        if dcn != "none":
            raise ValueError("DCN is not available for the MobileNetV2 backbone")
        bb = MobileNetV2Backbone(frozen_stages, norm_eval)
    else:
        bb = ResNetBackbone(name, frozen_stages, norm_eval, dcn)
    bb.train()
    return bb
