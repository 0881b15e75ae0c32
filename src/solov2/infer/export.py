"""ONNX export of the whole :class:`~solov2.infer.predictor.Predictor`, through ``torch.export``.

The exported graph takes what a user gives ``Predictor``: one uint8 RGB image ``[H, W, 3]``
(height-width-channels, as PIL / numpy hold it) of **any** size, and returns the predictor's
instances at that size:

- ``masks`` uint8 ``[N, H, W]`` (0/1), ``labels`` int64 ``[N]``, ``scores`` float32 ``[N]``,
  scores descending, ``N`` <= ``max_per_img`` (0 when nothing is found).

Inside the graph, as :class:`~solov2.infer.predictor.Predictor` does it:

1. keep-ratio resize to the test scale (mmcv rule, bilinear without antialias, in float32 and
   rounded to uint8), normalisation, zero padding bottom/right to multiples of 32;
2. the network;
3. :func:`solov2.postprocess.postprocess` for one image: sigmoid + 2x2 points NMS; every
   (cell, class) pair above ``score_thr`` (``NonZero``); their masks, the stride-area filter and
   the maskness rescoring; top ``nms_pre``; Matrix NMS; ``update_thr``; top ``max_per_img``;
   soft masks upsampled x4, cropped to the resized image, resized to ``H x W``, thresholded.

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
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import Config
from ..model import SOLOv2
from ..model.build import mask_geometry
from ..ops.masks import cell_windows, points_nms, rel_coord_logits
from ..ops.matrix_nms import matrix_nms_sorted
from ..postprocess import PostprocessCfg

__all__ = ["ExportWrapper", "export_onnx", "MAX_SIDE"]

MAX_SIDE = 16384  # the exported graph's largest input side


def _as_postprocess_cfg(test: Any) -> PostprocessCfg:
    """A copy of ``test`` (``TestCfg`` or ``PostprocessCfg``) as a :class:`PostprocessCfg`."""
    names = [f.name for f in dataclasses.fields(PostprocessCfg)]
    return PostprocessCfg(**{n: getattr(test, n) for n in names})


def _sort_desc(x: Tensor) -> tuple[Tensor, Tensor]:
    """1-D ``x`` sorted descending, exact ties in index order.

    Exported: ``aten.sort`` becomes ONNX ``TopK`` (ties: the lower index first, by its
    specification; the exporter has no translation of the ``stable`` overload). Eager: a stable
    sort, as :func:`solov2.postprocess.postprocess`.
    """
    if torch.compiler.is_exporting():
        return torch.sort(x, descending=True)
    return torch.sort(x, descending=True, stable=True)


def _taps(n_in: Any, n_out: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear taps along one axis (``align_corners=False``): indices ``i0, i1`` and weights
    ``l0, l1`` of each output pixel, computed as PyTorch's CPU kernel does (float32, source
    index ``scale * (d + 0.5) - 0.5`` clamped at 0, ``scale = n_in / n_out``)."""
    d = torch.arange(n_out, dtype=torch.float32)
    scale = d.new_full((), n_in) / d.new_full((), n_out)
    # rounded once, as if fused: matches the kernel more often than two roundings (measured)
    src = (scale.double() * (d + 0.5).double() - 0.5).float().clamp(min=0.0)
    i0 = torch.minimum(src.floor().long(), torch.full_like(src, n_in - 1).long())
    l1 = (src - i0.float()).clamp(0.0, 1.0)
    i1 = i0 + (i0 < n_in - 1).long()
    return i0, i1, 1.0 - l1, l1


def _resize_bilinear(x: Tensor, h: Any, w: Any) -> Tensor:
    """``F.interpolate(x, (h, w), "bilinear", align_corners=False)`` of ``[C, H, W]`` float
    pixels in explicit gathers, multiplies and adds.

    ONNX ``Resize`` rounds differently from PyTorch (0.03-0.5 % of the pixels end one level off
    once rounded to uint8, and a random test model's scores move by 1e-2); these elementwise ops
    round the same in onnxruntime and PyTorch, and match PyTorch's kernel, hence the
    Predictor's :func:`~solov2.data.transforms.resize_uint8`, in all but ~3e-5 of the pixels.
    """
    h0, h1, a0, a1 = _taps(x.shape[-2], h)
    w0, w1, b0, b1 = _taps(x.shape[-1], w)
    r0, r1 = x[:, h0], x[:, h1]
    t0 = r0[:, :, w0] * b0 + r0[:, :, w1] * b1  # along W first, as the kernel
    t1 = r1[:, :, w0] * b0 + r1[:, :, w1] * b1
    # the last multiply-add rounded once too (in float64), as measured against the kernel
    return (t1.double() * a1.view(-1, 1).double() + (t0 * a0.view(-1, 1)).double()).float()


class ExportWrapper(nn.Module):
    """Predictor-in-a-module: preprocessing, network and post-processing of one image.

    Args:
        model: the network (put in eval mode).
        test_scale: ``(long, short)`` keep-ratio test scale (``cfg.data.test_scale``).
        size_divisor: padding multiple (``cfg.data.size_divisor``).
        num_grids, strides: per level (``cfg.model.head``).
        test: thresholds (``PostprocessCfg``; ``cfg.model.test`` has the same fields).

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
        window: list[float] | None = None,
        rel_coords: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.num_grids = list(num_grids)
        self.window = window  # model.head.mask_window's half sides, or None
        self.rel_coords = rel_coords  # model.head.rel_coords' units, or None
        self.model = model.eval()
        self.long, self.short = max(test_scale), min(test_scale)
        self.div = max(1, int(size_divisor))
        self.test = _as_postprocess_cfg(test)
        self.num_classes = int(model.head.solo_cate.out_channels)
        cell_stride = torch.cat(
            [torch.full((s * s,), float(st)) for s, st in zip(num_grids, strides)]
        )
        self.register_buffer("cell_stride", cell_stride, persistent=False)

    def preprocess(self, image: Tensor) -> tuple[Tensor, Any, Any]:
        """uint8 ``[H, W, 3]`` -> (normalised, zero-padded ``[1, 3, Hp, Wp]``, ``nh``, ``nw``)."""
        h, w = image.shape[0], image.shape[1]
        factor = torch.sym_min(self.long / torch.sym_max(h, w), self.short / torch.sym_min(h, w))
        nh = torch.sym_max(1, torch.sym_int(h * factor + 0.5))
        nw = torch.sym_max(1, torch.sym_int(w * factor + 0.5))
        x = _resize_bilinear(image.permute(2, 0, 1).float(), nh, nw).unsqueeze(0)
        x = x.round().clamp(0, 255)
        x = (x - self.model.pixel_mean) / self.model.pixel_std
        hp, wp = (
            (nh + self.div - 1) // self.div * self.div,
            (nw + self.div - 1) // self.div * self.div,
        )
        return F.pad(x, (0, wp - nw, 0, hp - nh)), nh, nw

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t, c, m = self.test, self.num_classes, self.model
        h, w = image.shape[0], image.shape[1]
        x, nh, nw = self.preprocess(image)
        feats = m.neck(m.backbone(x))
        cate_logits, kernel_preds = m.head(feats)
        mask_feats = m.mask_feat_head(feats)[0].float()  # [E, Hf, Wf]
        hf, wf = mask_feats.shape[-2:]
        scores = torch.cat(
            [points_nms(v.float().sigmoid()).flatten(2).transpose(1, 2) for v in cate_logits], 1
        )[0].reshape(-1)  # [T * C], flat index
        kernels = torch.cat([v.flatten(2).transpose(1, 2) for v in kernel_preds], 1)[0]

        flat = torch.nonzero(scores > t.score_thr)[:, 0]  # [P] in (cell, class) order
        cell = torch.div(flat, c, rounding_mode="floor")
        label = flat - cell * c
        e = mask_feats.shape[0]
        cell_kernels = kernels[cell]
        logits = cell_kernels[:, :e].float() @ mask_feats.flatten(1)  # [P, Hf * Wf]
        if self.rel_coords is not None:  # the kernels' relative-coordinate entries
            logits = logits + rel_coord_logits(
                cell_kernels[:, e:], cell, self.num_grids, self.rel_coords, (hf, wf)
            ).flatten(1)
        soft = torch.sigmoid(logits)
        if self.window is not None:  # each cell's mask in its window (model.head.mask_window)
            soft = soft * cell_windows(cell, self.num_grids, self.window, (hf, wf)).flatten(1)
        binary = soft > t.mask_thr
        area = binary.sum(1).float()
        keep = area > self.cell_stride[cell]
        maskness = (soft * binary).sum(1) / area.clamp(min=1.0)
        rescored = torch.where(keep, scores[flat] * maskness, torch.full_like(area, -1.0))

        # top nms_pre of P + nms_pre (padding entries: score -1, index P -> an empty mask row)
        n_pre = int(t.nms_pre)
        pad = torch.full((n_pre,), -1.0, dtype=rescored.dtype)
        order = _sort_desc(torch.cat([rescored, pad]))[1][:n_pre]
        real = order < rescored.shape[0]
        order = torch.where(real, order, torch.full_like(order, rescored.shape[0]))
        soft = torch.cat([soft, soft.new_zeros((1, soft.shape[1]))])[order]
        k_scores = torch.cat([rescored, pad[:1]])[order]
        k_labels = torch.cat([label, label.new_zeros(1)])[order]
        k_area = torch.cat([area, area.new_zeros(1)])[order]
        valid = k_scores >= 0
        uniq = -1 - torch.arange(n_pre)
        decay = matrix_nms_sorted(
            (soft > t.mask_thr).float(),
            torch.where(valid, k_labels, uniq),
            k_scores,
            t.kernel,
            t.sigma,
            areas=k_area,
        )
        final = torch.where(valid, k_scores * decay, torch.full_like(k_scores, -1.0))
        final = final.masked_fill(final < t.update_thr, -1.0)
        final, top = _sort_desc(final)
        kept = torch.nonzero(final[: int(t.max_per_img)] >= 0)[:, 0]  # [N]: a prefix
        sel = top[kept]
        up = F.interpolate(
            soft[sel].view(1, -1, hf, wf),
            size=(hf * 4, wf * 4),
            mode="bilinear",
            align_corners=False,
        )[:, :, :nh, :nw]
        up = F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)[0]
        masks = (up > t.mask_thr).to(torch.uint8)
        return masks, k_labels[sel], final[kept]


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


def metadata(cfg: Config, test: PostprocessCfg) -> dict[str, str]:
    """The ``metadata_props`` of an exported file (all values strings)."""
    from .predictor import class_names_of

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
        checkpoint_or_model: a checkpoint path (see :func:`~solov2.infer.predictor.load_model`)
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
        **mask_geometry(cfg.model),
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
    output = Path(output)
    _atomic_save(program, output)
    return output
