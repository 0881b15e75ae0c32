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
   ``model.test.score_thr``, ``NonZero``; their masks, the stride-area filter and the
   maskness rescoring; top ``nms_pre``; Matrix NMS; ``update_thr``; top ``max_per_img``; soft
   masks upsampled x4, cropped to the resized image, resized to ``H x W``, thresholded),
   composed for one image;
4. the final threshold: the instances scoring at least ``score_thr`` (default 0.3,
   :data:`solov2.config.DEFAULT_SCORE_THR`, the Predictor's; ``solov2 export --score-thr``).

Sorting: ``Predictor`` sorts stably (exact ties in candidate order); the graph uses ONNX
``TopK``, whose specification puts the lower index first, and the PyTorch module a stable sort,
so both break exact ties the same way. Two implementations still round differently (convolution
summation order): a candidate within ~1e-6 of a tie (two neighbouring cells in points NMS, a
threshold) can be kept by one and not the other; everything else agrees to ~1e-6.

The file's ``metadata_props`` carry the contract: ``class_names`` and ``category_ids`` (JSON
lists, one per label: the name and the training dataset's COCO category id), ``input`` (layout
and dtype), ``score_thr``, ``test_scale``, ``size_divisor``, ``pixel_mean``, ``pixel_std``, the
post-processing thresholds (``postprocess``, JSON) and the ``preset``. Models with
deformable convolutions (DCN presets) export at opset 19, where ONNX has ``DeformConv``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import DEFAULT_SCORE_THR, Config
from ..data.coco_names import category_ids_of, class_names_of
from ..model import SOLOv2
from ..model.solov2 import HeadOutputs
from ..ops.dcn import DeformConv2d
from ..postprocess import PostprocessCfg, PostProcessor
from ..utils.fileio import atomic_write_path
from .loading import load_for_inference, resolve_config
from .preprocess import preprocess_traceable

__all__ = ["ExportWrapper", "export_onnx", "MAX_SIDE"]

MAX_SIDE = 16384  # the exported graph's largest input side


class ExportWrapper(nn.Module):
    """Predictor-in-a-module: preprocessing, network and post-processing of one image.

    Args:
        model: the network (put in eval mode).
        test_scale: ``(long, short)`` keep-ratio test scale (``cfg.data.test_scale``).
        size_divisor: padding multiple (``cfg.data.size_divisor``).
        post: the post-processor (thresholds, grids, strides, mask geometry), e.g.
            ``PostProcessor.from_config(cfg)``.
        score_thr: the final score an instance needs, as ``Predictor(score_thr=...)``: below
            the post-processor's candidate or post-NMS threshold it lowers them
            (:meth:`~solov2.postprocess.PostProcessor.with_score_thr`); None keeps every
            instance the post-processing returns.

    Forward: ``image`` uint8 ``[H, W, 3]`` RGB -> ``(masks uint8 [N, H, W], labels int64 [N],
    scores float32 [N])`` (see the module docstring).
    """

    def __init__(
        self,
        model: SOLOv2,
        test_scale: list[int],
        size_divisor: int,
        post: PostProcessor,
        score_thr: float | None = DEFAULT_SCORE_THR,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.scale = [int(v) for v in test_scale]
        self.div = max(1, int(size_divisor))
        self.post = post.with_score_thr(score_thr)
        self.score_thr = score_thr

    @classmethod
    def from_config(
        cls, model: SOLOv2, cfg: Config, score_thr: float | None = DEFAULT_SCORE_THR
    ) -> ExportWrapper:
        """The wrapper of ``model`` with ``cfg``'s test scale, padding and post-processing."""
        post = PostProcessor.from_config(cfg)
        return cls(model, list(cfg.data.test_scale), int(cfg.data.size_divisor), post, score_thr)

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
        masks, labels, scores = self.post.single_image(
            out, (nh, nw), (image.shape[0], image.shape[1])
        )
        if self.score_thr is None:
            return masks, labels, scores
        kept = torch.nonzero(scores >= self.score_thr)[:, 0]  # scores descend: a prefix
        return masks[kept], labels[kept], scores[kept]


def metadata(cfg: Config, test: PostprocessCfg, score_thr: float | None) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (all values strings)."""
    names = class_names_of(cfg)
    return {
        "class_names": json.dumps(names),
        "category_ids": json.dumps(category_ids_of(cfg, names)),
        "input": "image: uint8 [H, W, 3] RGB (height, width, channels), any size up to "
        f"{MAX_SIDE} px a side; resize, normalisation and padding are inside the graph",
        "outputs": "masks: uint8 [N, H, W] (0/1) at the input size; labels: int64 [N] "
        "(index into class_names and category_ids, the training dataset's COCO ids); "
        "scores: float32 [N], descending, >= score_thr",
        "score_thr": json.dumps(score_thr),
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
    score_thr: float | None = DEFAULT_SCORE_THR,
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
        score_thr: the final score an instance needs (default
            :data:`~solov2.config.DEFAULT_SCORE_THR`, as ``Predictor``); below
            ``model.test.score_thr`` / ``update_thr`` it lowers them, as ``Predictor`` does.
            None: every instance the post-processing returns (candidates above
            ``model.test.score_thr``).

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
    wrapper = ExportWrapper.from_config(model.cpu(), cfg, score_thr).eval()
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
    program.model.metadata_props.update(metadata(cfg, wrapper.test, score_thr))
    # 0o644 and no fsync, as every ONNX file written before
    return atomic_write_path(output, lambda tmp: program.save(tmp, external_data=False), mode=0o644)
