"""ONNX export of the whole :class:`~solov2.infer.predictor.Predictor`, through ``torch.export``.

The exported graph takes what a user gives ``Predictor``: one uint8 RGB image ``[H, W, 3]``
(height-width-channels, as PIL / numpy hold it) of **any** size, and returns the predictor's
instances at that size:

- ``masks`` uint8 ``[N, H, W]`` (0/1), ``labels`` int64 ``[N]``, ``scores`` float32 ``[N]``,
  scores descending, ``N`` <= ``max_per_img`` (0 when nothing is found).

Inside the graph, as :class:`~solov2.infer.predictor.Predictor` does it:

1. keep-ratio resize to the test scale (mmcv rule, bilinear without antialias, in float32 and
   rounded to uint8), normalisation, zero padding bottom/right to multiples of 32
   (:func:`solov2.infer.preprocess.preprocess_traceable`);
2. the network;
3. the Predictor's post-processor, :meth:`solov2.postprocess.PostProcessor.single_image`: the
   same stages as the Predictor's (sigmoid + 2x2 points NMS; every (cell, class) pair above
   ``score_thr``, ``NonZero``; their masks, the stride-area filter and the maskness rescoring;
   top ``nms_pre``; Matrix NMS; ``update_thr``; top ``max_per_img``; soft masks upsampled x4,
   cropped to the resized image, resized to ``H x W``, thresholded), composed for one image.

Sorting: ``Predictor`` sorts stably (exact ties in candidate order); the graph uses ONNX
``TopK``, whose specification puts the lower index first, and the PyTorch module a stable sort,
so both break exact ties the same way. Two implementations still round differently (convolution
summation order): a candidate within ~1e-6 of a tie (two neighbouring cells in points NMS, a
threshold) can be kept by one and not the other; everything else agrees to ~1e-6.

The file's ``metadata_props`` carry the contract: ``class_names`` (JSON list, one per label),
``input`` (layout and dtype), ``test_scale``, ``size_divisor``, ``pixel_mean``, ``pixel_std``,
the post-processing thresholds (``postprocess``, JSON) and the ``preset``. Models with
deformable convolutions (DCN presets) export at opset 19, where ONNX has ``DeformConv``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..data.coco_names import class_names_of
from ..model import SOLOv2
from ..model.build import mask_geometry
from ..model.solov2 import HeadOutputs
from ..ops.dcn import DeformConv2d
from ..postprocess import PostprocessCfg, PostProcessor
from ..utils.fileio import atomic_write_path
from .loading import load_for_inference, resolve_config
from .preprocess import preprocess_traceable

__all__ = ["ExportWrapper", "export_onnx", "MAX_SIDE"]

MAX_SIDE = 16384  # the exported graph's largest input side


def _as_postprocess_cfg(test: Any) -> PostprocessCfg:
    """A copy of ``test`` (``TestCfg`` or ``PostprocessCfg``) as a :class:`PostprocessCfg`."""
    names = [f.name for f in dataclasses.fields(PostprocessCfg)]
    return PostprocessCfg(**{n: getattr(test, n) for n in names})


class ExportWrapper(nn.Module):
    """Predictor-in-a-module: preprocessing, network and post-processing of one image.

    Args:
        model: the network (put in eval mode).
        test_scale: ``(long, short)`` keep-ratio test scale (``cfg.data.test_scale``).
        size_divisor: padding multiple (``cfg.data.size_divisor``).
        num_grids, strides: per level (``cfg.model.head``).
        test: thresholds (``PostprocessCfg``; ``cfg.model.test`` has the same fields).
        geometry: ``window=`` and ``rel_coords=`` of the post-processor
            (:func:`solov2.model.build.mask_geometry`), or None (the reference's masks).

    Forward: ``image`` uint8 ``[H, W, 3]`` RGB -> ``(masks uint8 [N, H, W], labels int64 [N],
    scores float32 [N])`` (see the module docstring).
    """

    def __init__(
        self,
        model: SOLOv2,
        test_scale: list[int],
        size_divisor: int,
        num_grids: list[int],
        strides: list[int],
        test: PostprocessCfg | Any,
        geometry: Mapping[str, list[float] | None] | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.scale = [int(v) for v in test_scale]
        self.div = max(1, int(size_divisor))
        self.post = PostProcessor(_as_postprocess_cfg(test), num_grids, strides, **(geometry or {}))

    @property
    def test(self) -> PostprocessCfg:
        """The post-processing thresholds baked into the graph."""
        return self.post.cfg

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = self.model
        x, nh, nw = preprocess_traceable(image, self.scale, self.div, m.pixel_mean, m.pixel_std)
        feats = m.neck(m.backbone(x))
        cate_logits, kernel_preds = m.head(feats)
        out = HeadOutputs(cate_logits, kernel_preds, m.mask_feat_head(feats).float())
        return self.post.single_image(out, (nh, nw), (image.shape[0], image.shape[1]))


def metadata(cfg: Config, test: PostprocessCfg) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (all values strings)."""
    return {
        "class_names": json.dumps(class_names_of(cfg)),
        "input": "image: uint8 [H, W, 3] RGB (height, width, channels), any size up to "
        f"{MAX_SIDE} px a side; resize, normalisation and padding are inside the graph",
        "outputs": "masks: uint8 [N, H, W] (0/1) at the input size; labels: int64 [N] "
        "(index into class_names); scores: float32 [N], descending",
        "test_scale": json.dumps([int(v) for v in cfg.data.test_scale]),
        "size_divisor": str(int(cfg.data.size_divisor)),
        "pixel_mean": json.dumps([float(v) for v in cfg.model.pixel_mean]),
        "pixel_std": json.dumps([float(v) for v in cfg.model.pixel_std]),
        "postprocess": json.dumps(dataclasses.asdict(test)),
        "preset": str(cfg.name),
    }


def export_onnx(
    checkpoint_or_model: str | os.PathLike[str] | SOLOv2,
    output: str | os.PathLike[str],
    config: Config | str | None = None,
    opset: int | None = None,
    score_thr: float | None = None,
) -> Path:
    """Export a checkpoint (or a model + ``config``) to ONNX (``torch.onnx.export(dynamo=True)``).

    Args:
        checkpoint_or_model: a checkpoint, run folder or published name (see
            :func:`~solov2.infer.loading.load_for_inference`)
            or a :class:`SOLOv2` (then ``config`` is required; the model is moved to the CPU).
        output: the ``.onnx`` file (written atomically, weights embedded).
        config: a Config / preset / YAML overriding the checkpoint's.
        opset: ONNX opset; default 18, or 19 for models with DCN layers (ONNX ``DeformConv``,
            run by onnxruntime's CPU provider).
        score_thr: candidate threshold baked into the graph (default ``cfg.model.test``).

    Returns:
        The output path. Input ``image`` uint8 ``[H, W, 3]``; outputs ``masks``, ``labels``,
        ``scores`` (see the module docstring).

    Raises:
        ValueError: DCN layers with ``opset < 19``.
    """
    if isinstance(checkpoint_or_model, nn.Module):
        resolved = resolve_config(config)
        if resolved is None:
            raise ValueError("export_onnx: pass config= together with a model")
        model, cfg = checkpoint_or_model, resolved
    else:
        model, cfg = load_for_inference(checkpoint_or_model, config)
    has_dcn = any(isinstance(m, DeformConv2d) for m in model.modules())
    if opset is None:
        opset = 19 if has_dcn else 18
    if has_dcn and opset < 19:
        raise ValueError(
            f"{cfg.name}: deformable convolutions need ONNX opset >= 19 (DeformConv), got {opset}"
        )
    test = _as_postprocess_cfg(cfg.model.test)
    if score_thr is not None:
        test.score_thr = float(score_thr)
    wrapper = ExportWrapper(
        model.cpu(),
        list(cfg.data.test_scale),
        int(cfg.data.size_divisor),
        list(cfg.model.head.num_grids),
        list(cfg.model.head.strides),
        test,
        mask_geometry(cfg.model),
    ).eval()
    example = torch.zeros(
        (min(cfg.data.test_scale), max(cfg.data.test_scale), 3), dtype=torch.uint8
    )
    side = torch.export.Dim  # height and width vary independently
    dims = ({0: side("height", min=2, max=MAX_SIDE), 1: side("width", min=2, max=MAX_SIDE)},)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["image"],
            dynamic_shapes=dims,
            output_names=["masks", "labels", "scores"],
            verbose=False,
        )
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update(metadata(cfg, test))
    # 0o644 and no fsync, as every ONNX file written before
    return atomic_write_path(output, lambda tmp: program.save(tmp, external_data=False), mode=0o644)
