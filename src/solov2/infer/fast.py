"""Fast inference wrapper: low-precision weights, channels-last and CUDA graphs per input shape.

``FastModel(model)`` computes the same function as ``model``, plus post-processing's static first
stage (``HeadOutputs.candidates``, inside the graph); the rest of post-processing stays as it is.
Frozen BatchNorms are folded into the convolutions before them (:func:`fold_batchnorm`: one
kernel fewer per convolution, the same function up to float rounding). Each option is
independent:

- ``dtype``: weights and activations in bf16/fp16 instead of fp32 weights under autocast (no
  per-op casts). Models with deformable convolutions keep fp32 weights (torchvision's
  ``deform_conv2d`` has no bf16 kernel) and use autocast instead.
- ``channels_last``: NHWC convolutions without layout transposes around cuDNN.
- ``cuda_graphs``: the forward pass of each ``(B, H, W)`` input seen a second time is captured
  in a CUDA graph and replayed from then on, removing the CPU launch cost of a few hundred small
  kernels (shapes seen once, common in evaluation over images of many sizes, run eagerly and
  cost no capture; at most ``max_graphs`` graphs are kept). The returned tensors are the
  graph's static outputs: valid until the next call with that shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..model.backbone import ResNetBackbone
from ..model.solov2 import HeadOutputs, SOLOv2
from ..ops.dcn import DeformConv2d
from ..postprocess import candidate_inputs


def _conv_bn_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Child names ``(conv, bn)`` where the BatchNorm directly follows the convolution: adjacent
    entries of an ``nn.Sequential``, and ``convK -> bnK`` of the ResNet stem and torchvision's
    ResNet blocks (the only modules whose names say so)."""
    names = [n for n, _ in parent.named_children()]
    if isinstance(parent, nn.Sequential):
        return list(zip(names, names[1:]))
    if isinstance(parent, (ResNet, ResNetBackbone, BasicBlock, Bottleneck)):
        return [(f"conv{n[2:]}", n) for n in names if n.startswith("bn")]
    return []


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a plain ``nn.Conv2d`` into that
    convolution's weights and bias, in place (the BatchNorm becomes ``nn.Identity``): the same
    function up to float rounding, one kernel and its memory pass fewer. Deformable
    convolutions and BatchNorms in training mode are left alone. Returns how many were folded.
    """
    folded = 0
    for parent in list(module.modules()):
        kids = dict(parent.named_children())
        for c, b in _conv_bn_pairs(parent):
            conv, bn = kids.get(c), kids.get(b)
            if (
                type(conv) is nn.Conv2d
                and isinstance(bn, nn.BatchNorm2d)
                and not bn.training
                and bn.running_mean is not None
                and bn.running_var is not None
            ):
                setattr(parent, c, fuse_conv_bn_eval(conv, bn))
                setattr(parent, b, nn.Identity())
                folded += 1
    return folded


class _Network(nn.Module):
    """The network plus :func:`candidate_inputs`, returning plain tensors (what
    ``torch.compile`` and CUDA graphs see)."""

    def __init__(
        self, model: SOLOv2, dtype: torch.dtype | None, memory_format: torch.memory_format
    ) -> None:
        super().__init__()
        self.model, self.dtype, self.memory_format = model, dtype, memory_format

    def forward(self, x: Tensor, image_sizes: Tensor) -> tuple[Any, ...]:
        m = self.model
        if self.dtype is not None:
            x = m.normalize(x, image_sizes).to(self.dtype)
            feats = m.neck(m.backbone(x.contiguous(memory_format=self.memory_format)))
            cate, kern = m.head(feats)
            mask_feats = m.mask_feat_head(feats)
        else:
            out = m(x, image_sizes)
            cate, kern, mask_feats = out.cate_logits, out.kernel_preds, out.mask_feats
        return cate, kern, mask_feats, candidate_inputs(cate, kern)


class FastModel(nn.Module):
    """Inference-only wrapper of :class:`~solov2.model.SOLOv2` (see the module docstring).

    Args:
        model: the network (put in eval mode and changed in place: BatchNorms folded into the
            convolutions, weights converted to ``dtype`` when given).
        dtype: ``torch.bfloat16``/``torch.float16`` or ``None`` (fp32).
        channels_last: use NHWC memory format.
        cuda_graphs: capture/replay CUDA graphs (CUDA only).
        max_graphs: the most input shapes given a graph (each holds its own memory).
        compile: ``torch.compile`` the network (static shapes; compiled once per input shape,
            before any graph capture of that shape).
    """

    _net: Callable[[Tensor, Tensor], tuple[Any, ...]]  # set through __dict__ in __init__

    def __init__(
        self,
        model: SOLOv2,
        dtype: torch.dtype | None = None,
        channels_last: bool = False,
        cuda_graphs: bool = False,
        max_graphs: int = 16,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.folded = fold_batchnorm(self.model)
        has_dcn = any(isinstance(m, DeformConv2d) for m in model.modules())
        self.autocast_dtype = dtype if has_dcn else None
        self.dtype = None if has_dcn else dtype
        if self.dtype is not None:
            self.model.to(self.dtype)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        net = _Network(self.model, self.dtype, self.memory_format)
        # not a registered submodule: it shares ``self.model``'s parameters
        self.__dict__["_net"] = torch.compile(net, dynamic=False) if compile else net
        self.cuda_graphs = cuda_graphs
        self.max_graphs = max_graphs
        self._seen: set[tuple[int, ...]] = set()
        self._graphs: dict[
            tuple[int, ...], tuple[torch.cuda.CUDAGraph, Tensor, Tensor, HeadOutputs]
        ] = {}

    def _run(self, images: Tensor, image_sizes: Tensor) -> HeadOutputs:
        x = images.contiguous(memory_format=self.memory_format)
        with torch.autocast(
            x.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        ):
            cate, kern, mask_feats, candidates = self._net(x, image_sizes)
        return HeadOutputs(list(cate), list(kern), mask_feats, tuple(candidates))

    @torch.inference_mode()
    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> HeadOutputs:
        """``images`` uint8/float ``[B, 3, Hp, Wp]`` (0-255), ``image_sizes`` ``[B, 2]``."""
        if image_sizes is None:
            image_sizes = torch.tensor([list(images.shape[-2:])] * images.shape[0])
        if not (self.cuda_graphs and images.is_cuda):
            return self._run(images, image_sizes)
        key = (*images.shape, images.dtype.itemsize)
        if key not in self._graphs and (
            key not in self._seen or len(self._graphs) >= self.max_graphs
        ):
            self._seen.add(key)
            return self._run(images, image_sizes)
        if key not in self._graphs:
            static_in = images.clone()
            static_sizes = image_sizes.to(images.device).clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up (cuDNN autotuning, allocations) off the graph
                    self._run(static_in, static_sizes)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._run(static_in, static_sizes)
            self._graphs[key] = (graph, static_in, static_sizes, out)
        graph, static_in, static_sizes, out = self._graphs[key]
        static_in.copy_(images)
        static_sizes.copy_(image_sizes)
        graph.replay()
        return out
