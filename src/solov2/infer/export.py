"""ONNX export: the network plus a static-shape post-process, through ``torch.export``.

The exported graph takes one uint8 ``[3, H, W]`` RGB image of a fixed size (``H``, ``W``
multiples of 32, chosen at export time; resize/pad on the caller's side) and returns
``masks`` uint8 ``[K, H, W]``, ``labels`` int64 ``[K]`` and ``scores`` float32 ``[K]`` with
``K = max_per_img``, sorted by score and padded with score 0, label -1 and empty masks.

Static post-process (no data-dependent shapes):

1. sigmoid + 2x2 points NMS; every (cell, class) score ``<= score_thr`` set to 0;
2. top ``k = min(nms_pre, cells * classes)`` (cell, class) pairs by *raw* score;
3. their dynamic masks at stride 4, binarised at ``mask_thr``; the stride-area filter and the
   maskness rescoring are multiplications (a filtered candidate gets score 0);
4. sort, Matrix NMS over the ``k`` candidates (:func:`solov2.ops.matrix_nms_sorted`), scores
   below ``update_thr`` set to 0, top ``max_per_img``;
5. soft masks upsampled x4 to ``H x W`` and thresholded at ``mask_thr``.

Where it can differ from :func:`solov2.postprocess.postprocess` (the dynamic path used by
:class:`~solov2.infer.predictor.Predictor`): only when **more than** ``nms_pre`` (cell, class)
pairs pass ``score_thr``. The dynamic path keeps *all* of them, rescores them by maskness and
then takes the top ``nms_pre``; the static path takes the top ``nms_pre`` by raw score first.
With fewer candidates both paths see the same set and agree up to float rounding (and the order
of exactly tied scores). Models with deformable convolutions (DCN presets) export at opset 19,
where ONNX has ``DeformConv``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..model import SOLOv2
from ..ops.masks import points_nms
from ..ops.matrix_nms import matrix_nms_sorted
from ..postprocess import PostprocessCfg

__all__ = ["ExportWrapper", "export_onnx"]


def _as_postprocess_cfg(test: Any) -> PostprocessCfg:
    """A copy of ``test`` (``TestCfg`` or ``PostprocessCfg``) as a :class:`PostprocessCfg`."""
    names = [f.name for f in dataclasses.fields(PostprocessCfg)]
    return PostprocessCfg(**{n: getattr(test, n) for n in names})


def _top(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` largest of 1-D ``x``, descending, exact ties in index order.

    ONNX ``TopK`` puts the lower index first by specification, so the export uses ``topk``;
    ``torch.topk`` leaves the order of equal values unspecified, so eager PyTorch uses a stable
    sort (which the ONNX exporter cannot translate).
    """
    if torch.compiler.is_exporting():
        return torch.topk(x, k)
    values, index = torch.sort(x, descending=True, stable=True)
    return values[:k], index[:k]


class ExportWrapper(nn.Module):
    """SOLOv2 + static post-process for one fixed-size image (see the module docstring).

    Args:
        model: the network (put in eval mode).
        height, width: input size, multiples of 32.
        num_grids, strides: per level (``cfg.model.head``).
        test: thresholds (``PostprocessCfg``; ``cfg.model.test`` has the same fields).

    Forward: ``image`` uint8 (or float, 0-255) ``[3, H, W]`` RGB ->
    ``(masks uint8 [K, H, W], labels int64 [K], scores float32 [K])``, ``K = max_per_img``.
    """

    def __init__(self, model: SOLOv2, height: int, width: int, num_grids: list[int],
                 strides: list[int], test: PostprocessCfg | Any) -> None:
        super().__init__()
        if height <= 0 or width <= 0 or height % 32 or width % 32:
            raise ValueError(f"export size must be positive multiples of 32, got {height}x{width}")
        self.model = model.eval()
        self.height, self.width = int(height), int(width)
        self.test = _as_postprocess_cfg(test)
        num_classes = int(model.head.solo_cate.out_channels)
        cells = sum(s * s for s in num_grids)
        self.num_classes = num_classes
        self.k = min(int(self.test.nms_pre), cells * num_classes)
        self.max_det = min(int(self.test.max_per_img), self.k)
        cell_stride = torch.cat([torch.full((s * s,), float(st))
                                 for s, st in zip(num_grids, strides)])
        self.register_buffer("cell_stride", cell_stride, persistent=False)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = self.test
        out = self.model(image.unsqueeze(0))
        c = self.num_classes
        scores = torch.cat([points_nms(x.float().sigmoid()).flatten(2).transpose(1, 2)
                            for x in out.cate_logits], 1)[0].reshape(-1)  # [T * C]
        kernels = torch.cat([x.flatten(2).transpose(1, 2) for x in out.kernel_preds], 1)[0]
        feats = out.mask_feats[0].float()  # [E, Hf, Wf]
        hf, wf = feats.shape[-2:]
        scores = torch.where(scores > t.score_thr, scores, torch.zeros_like(scores))
        _, idx = _top(scores, self.k)
        idx = torch.topk(idx, self.k, largest=False).values  # flat order (distinct), as nonzero()
        top = scores[idx]
        cell = torch.div(idx, c, rounding_mode="floor")
        label = idx - cell * c

        soft = torch.sigmoid(kernels[cell].float() @ feats.flatten(1))  # [k, Hf * Wf]
        binary = (soft > t.mask_thr).float()
        area = binary.sum(1)
        maskness = (soft * binary).sum(1) / area.clamp(min=1.0)
        valid = (area > self.cell_stride[cell]) & (top > t.score_thr)
        rescored = top * maskness * valid.float()

        rescored, order = _top(rescored, self.k)  # ties by flat index, as the dynamic path
        label, area = label[order], area[order]
        soft, binary = soft[order], binary[order]
        # invalid candidates (score 0) sort last; unique negative labels keep them inert
        valid = rescored > 0
        uniq = -1 - torch.arange(self.k, device=label.device)
        nms_label = torch.where(valid, label, uniq)
        decay = matrix_nms_sorted(binary, nms_label, rescored, t.kernel, t.sigma, areas=area)
        final = rescored * decay
        final = torch.where(valid & (final >= t.update_thr), final, torch.zeros_like(final))

        scores_k, keep = _top(final, self.max_det)
        labels_k = torch.where(scores_k > 0, label[keep], torch.full_like(label[keep], -1))
        soft_k = soft[keep].view(1, self.max_det, hf, wf)
        up = F.interpolate(soft_k, size=(hf * 4, wf * 4), mode="bilinear", align_corners=False)
        up = up[0, :, : self.height, : self.width]
        masks = (up > t.mask_thr) & (scores_k > 0).view(-1, 1, 1)
        return masks.to(torch.uint8), labels_k, scores_k


def _atomic_save(program: Any, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        program.save(tmp, external_data=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_onnx(
    checkpoint_or_model: str | os.PathLike[str] | SOLOv2,
    output: str | os.PathLike[str],
    height: int,
    width: int,
    config: Config | str | None = None,
    opset: int | None = None,
    score_thr: float | None = None,
) -> Path:
    """Export a checkpoint (or a model + ``config``) to ONNX (``torch.onnx.export(dynamo=True)``).

    Args:
        checkpoint_or_model: a checkpoint path (see :func:`~solov2.infer.predictor.load_model`)
            or a :class:`SOLOv2` (then ``config`` is required; the model is moved to the CPU).
        output: the ``.onnx`` file (written atomically, weights embedded).
        height, width: the fixed input size, multiples of 32.
        config: a Config / preset / YAML overriding the checkpoint's.
        opset: ONNX opset; default 18, or 19 for models with DCN layers (ONNX ``DeformConv``,
            run by onnxruntime's CPU provider).
        score_thr: candidate threshold baked into the graph (default ``cfg.model.test``).

    Returns:
        The output path. Inputs: ``image`` uint8 ``[3, H, W]``; outputs ``masks``, ``labels``,
        ``scores`` (see :class:`ExportWrapper`).

    Raises:
        ValueError: a size that is not a multiple of 32, or DCN layers with ``opset < 19``.
    """
    from .predictor import _resolve_config, load_model

    if isinstance(checkpoint_or_model, nn.Module):
        cfg = _resolve_config(config)
        if cfg is None:
            raise ValueError("export_onnx: pass config= together with a model")
        model = checkpoint_or_model
    else:
        model, cfg = load_model(checkpoint_or_model, config)
    from ..ops.dcn import DeformConv2d

    has_dcn = any(isinstance(m, DeformConv2d) for m in model.modules())
    if height <= 0 or width <= 0:  # default: the test scale's short side at a 4:3 aspect
        short = min(cfg.data.test_scale)
        height = -(-short // 32) * 32
        width = -(-(short * 4 // 3) // 32) * 32
    if opset is None:
        opset = 19 if has_dcn else 18
    if has_dcn and opset < 19:
        raise ValueError(f"{cfg.name}: deformable convolutions need ONNX opset >= 19 "
                         f"(DeformConv), got {opset}")
    test = _as_postprocess_cfg(cfg.model.test)
    if score_thr is not None:
        test.score_thr = float(score_thr)
    wrapper = ExportWrapper(model.cpu(), height, width, list(cfg.model.head.num_grids),
                            list(cfg.model.head.strides), test).eval()
    example = torch.zeros((3, height, width), dtype=torch.uint8)
    with torch.no_grad():
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=opset,
                                    input_names=["image"],
                                    output_names=["masks", "labels", "scores"], verbose=False)
    if program is None:  # pragma: no cover - dynamo=True always returns a program
        raise RuntimeError("torch.onnx.export returned no program")
    output = Path(output)
    _atomic_save(program, output)
    return output
