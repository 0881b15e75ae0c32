"""Batched inference on images given as paths, PIL images, numpy arrays or tensors.

    >>> predictor = Predictor.from_checkpoint("runs/demo/model_final.pth")
    >>> pred = predictor("photo.jpg")                  # one input -> one Predictions
    >>> preds = predictor(["a.jpg", "b.png"], score_thr=0.3)   # a list -> a list

Images are resized with the config's test scale (keep ratio, bilinear, no antialias), run through
the network in batches, post-processed (:func:`solov2.postprocess.postprocess`) and returned on the
CPU at their original size. Images are grouped by padded input size before batching, so the
result for an image does not depend on which other images share its batch (up to float rounding:
batched convolutions may round differently, which can flip borderline mask pixels).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..config import Config, ConfigError, apply_overrides, config_from_dict
from ..data.io import read_image
from ..errors import CheckpointError
from ..model import SOLOv2, build_model
from ..model.build import mask_geometry
from ..postprocess import PostprocessCfg, postprocess
from ..presets import get_config
from ..structures import Predictions
from .coco_names import COCO_CATEGORY_IDS, COCO_CLASSES
from .preprocess import padded_size, preprocess_images, resize_keep_ratio_size

__all__ = [
    "ImageInput",
    "Predictor",
    "load_model",
    "load_model_state",
    "resolve_device",
    "to_image_tensor",
]

logger = logging.getLogger("solov2")

ImageInput = Union[str, "os.PathLike[str]", Image.Image, np.ndarray, Tensor]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pil_to_tensor(img: Image.Image) -> Tensor:
    from ..data.io import _to_rgb  # the dataset's mode handling (16-bit, alpha, CMYK, ...)

    img = ImageOps.exif_transpose(img)
    arr = np.asarray(_to_rgb(img), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_image_tensor(image: ImageInput) -> Tensor:
    """Convert one input to a uint8 ``[3, H, W]`` RGB tensor.

    Accepts a file path (read with Pillow, EXIF orientation applied), a PIL image (EXIF
    orientation applied), a numpy ``[H, W, 3]`` / ``[H, W, 4]`` / ``[H, W]`` uint8 RGB(A)/gray
    array, or a uint8 ``[3, H, W]`` / ``[1, H, W]`` tensor.

    Raises:
        ImageReadError: an unreadable file. ValueError/TypeError: an unsupported array or type.
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, Image.Image):
        return _pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC RGB, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"numpy images must be [H, W, 3] RGB, got shape {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image[:, :, :3].transpose(2, 0, 1)))
        return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t
    if isinstance(image, Tensor):
        if image.dtype != torch.uint8:
            raise ValueError(
                f"tensor images must be uint8 [3, H, W] on the 0-255 scale, got {image.dtype}"
            )
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"tensor images must be [3, H, W], got shape {tuple(image.shape)}")
        return (image.expand(3, -1, -1) if image.shape[0] == 1 else image).contiguous()
    raise TypeError(
        f"unsupported image type {type(image).__name__} (path, PIL image, numpy "
        "HWC uint8 or tensor CHW uint8)"
    )


def class_names_of(cfg: Config) -> list[str]:
    """``cfg.data.class_names`` when it has one name per class, else ``class_{i}``."""
    n = cfg.model.num_classes
    names = list(cfg.data.class_names)
    if len(names) == n:
        return names
    if names:
        logger.warning("config has %d class names for %d classes; using class_{i}", len(names), n)
    return [f"class_{i}" for i in range(n)]


def category_ids_of(cfg: Config, class_names: Sequence[str]) -> list[int]:
    """COCO ``category_id`` of each label.

    In order: ``cfg.data.category_ids`` if the config has one entry per class; the official COCO
    ids when the class names are the 80 COCO classes; otherwise ``label + 1`` (the ids of a
    dataset whose categories are numbered 1..C in sorted order, as :mod:`solov2.data.coco` maps
    them).
    """
    ids = getattr(cfg.data, "category_ids", None)
    if ids and len(ids) == len(class_names):
        return [int(i) for i in ids]
    if tuple(class_names) == COCO_CLASSES:
        return list(COCO_CATEGORY_IDS)
    return [i + 1 for i in range(len(class_names))]


def _resolve_config(config: Config | str | dict[str, Any] | None) -> Config | None:
    if config is None or isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return config_from_dict(config)
    return get_config(str(config))


def load_model_state(model: SOLOv2, state: dict[str, Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model`` (a ``module.`` DDP prefix is stripped).

    Raises:
        CheckpointError: naming the missing/unexpected keys and shape mismatches.
    """
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", wrong),
        ):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{what}: {', '.join(keys[:5])}{more}")
        raise CheckpointError(
            f"{source}: weights do not fit the config's model; " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def load_model(
    path: str | os.PathLike[str],
    config: Config | str | dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> tuple[SOLOv2, Config]:
    """Build the model of a checkpoint and load its weights (CPU, train mode).

    Args:
        path: our checkpoint (``{"model", "config", ...}``), a ``.safetensors`` release, an
            output directory (``last_checkpoint``), or a bare state dict (needs ``config``).
        config: overrides the stored config: a :class:`Config`, a preset name, a YAML file or a
            dict. Needed when the checkpoint stores none.
        overrides: ``a.b=value`` overrides applied to that config.

    Raises:
        CheckpointError: unreadable/unsafe file, official layout (convert it first), no config,
            or weights that do not fit the model.
        ConfigError: a bad override.
    """
    from ..engine.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        state, stored = ckpt["model"], ckpt.get("config")
    elif "state_dict" in ckpt:
        raise CheckpointError(
            f"{path}: this looks like an official SOLO / mmdetection checkpoint "
            "('state_dict' entry); convert it first: solov2 convert SRC DST --config PRESET"
        )
    elif ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        state, stored = ckpt, None
    else:
        raise CheckpointError(
            f"{path}: no 'model' state dict in the checkpoint "
            f"(keys: {', '.join(sorted(map(str, ckpt))[:8])})"
        )
    try:
        cfg = _resolve_config(config)
        if cfg is None and isinstance(stored, dict):
            cfg = config_from_dict(stored)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if cfg is None:
        raise CheckpointError(
            f"{path}: the checkpoint stores no config; pass one (a preset name or config.yaml)"
        )
    cfg = apply_overrides(cfg, list(overrides))
    model = build_model(cfg)
    load_model_state(model, state, str(path))
    return model, cfg


class Predictor:
    """Run a SOLOv2 model on images; returns :class:`~solov2.structures.Predictions` on the CPU.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        cfg: its config (test scale, ``model.test`` thresholds, class names).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
        score_thr: default final-score threshold (see :meth:`__call__`); ``None`` keeps every
            instance the post-processing returns.
        batch_size: images per forward pass.

    Attributes:
        class_names: name of each label. category_ids: COCO id of each label
        (:func:`category_ids_of`). cfg, model, device.
    """

    def __init__(
        self,
        model: SOLOv2,
        cfg: Config,
        device: str | torch.device = "auto",
        score_thr: float | None = None,
        batch_size: int = 4,
    ) -> None:
        self.cfg = cfg
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.score_thr = score_thr
        self.batch_size = max(1, int(batch_size))
        self.class_names = class_names_of(cfg)
        self.category_ids = category_ids_of(cfg, self.class_names)
        self.scale = tuple(int(v) for v in cfg.data.test_scale)
        self.size_divisor = int(cfg.data.size_divisor)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        config: Config | str | dict[str, Any] | None = None,
        score_thr: float | None = None,
        batch_size: int = 4,
        overrides: Sequence[str] = (),
    ) -> Predictor:
        """Build a predictor from a checkpoint file (``.pth`` / ``.safetensors``) or output dir.

        Args:
            path: our checkpoint (``{"model", "config", ...}``), a ``.safetensors`` release, an
                output directory (``last_checkpoint``), or a bare state dict (needs ``config``).
            config: overrides the stored config: a :class:`Config`, a preset name, a YAML file or
                a dict. Needed when the checkpoint stores none.
            overrides: ``a.b=value`` overrides applied to that config.

        Raises:
            CheckpointError: unreadable/unsafe file, official layout (convert it first), no
                config, or weights that do not fit the model.
        """
        model, cfg = load_model(path, config, overrides)
        return cls(model, cfg, device=device, score_thr=score_thr, batch_size=batch_size)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        device: str | torch.device = "auto",
        score_thr: float | None = None,
        batch_size: int = 4,
        progress: bool = True,
    ) -> Predictor:
        """A predictor for a published COCO checkpoint, e.g. ``"solov2_r50_fpn_3x"``.

        The first call downloads the file into torch hub's cache (``TORCH_HOME`` respected),
        checks its published SHA-256 prefix and converts it; later calls use the cached
        conversion without network. ``name`` may also be ``NAME@official``, a URL or a local
        path (see :func:`solov2.pretrained.resolve_weights`; ``solov2 weights list`` shows the
        names).

        Raises:
            CheckpointError: download, checksum or conversion failure (one line: what to fetch
                from where and where to put it when offline).
        """
        from ..pretrained import resolve_weights

        return cls.from_checkpoint(
            resolve_weights(name, progress=progress),
            device=device,
            score_thr=score_thr,
            batch_size=batch_size,
        )

    def postprocess_cfg(self, score_thr: float | None = None) -> PostprocessCfg:
        """``cfg.model.test`` as a :class:`PostprocessCfg`.

        A final threshold ``score_thr`` below its candidate threshold (``score_thr``) or its
        post-NMS threshold (``update_thr``) lowers them to ``score_thr``: a final score never
        exceeds the candidate's category score, so otherwise instances between the two would
        be dropped before the final threshold could keep them.
        """
        cfg = PostprocessCfg(**dataclasses.asdict(self.cfg.model.test))
        if score_thr is not None:
            cfg.score_thr = min(cfg.score_thr, score_thr)
            cfg.update_thr = min(cfg.update_thr, score_thr)
        return cfg

    @torch.inference_mode()
    def predict_tensors(
        self, images: Sequence[Tensor], score_thr: float | None = None
    ) -> list[Predictions]:
        """Predict uint8 ``[3, H, W]`` RGB tensors (one forward pass for all of them).

        Returns:
            One :class:`Predictions` per image on the CPU: masks bool ``[K, H, W]`` at the
            original size, scores descending and ``>= score_thr`` when given.
        """
        thr = self.score_thr if score_thr is None else score_thr
        batch, sizes, orig = preprocess_images(images, self.scale, self.size_divisor, self.device)
        out = self.model(batch, sizes.to(self.device))
        head = self.cfg.model.head
        preds = postprocess(
            out.cate_logits,
            out.kernel_preds,
            out.mask_feats,
            sizes,
            orig,
            list(head.num_grids),
            list(head.strides),
            self.postprocess_cfg(thr),
            out.candidates,
            **mask_geometry(self.cfg.model),
        )
        results = []
        for p in preds:
            if thr is not None:  # before the copy: full-size masks are the bulk of the transfer
                keep = p.scores >= thr
                p = Predictions(p.masks[keep], p.labels[keep], p.scores[keep], p.boxes[keep])
            results.append(p.to("cpu"))
        return results

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], score_thr: float | None = None
    ) -> Predictions | list[Predictions]:
        """Predict one image or a list of images.

        Args:
            images: one input or a list/tuple of inputs (see :func:`to_image_tensor`); a uint8
                ``[B, 3, H, W]`` tensor counts as a list.
            score_thr: keep instances whose final score (after maskness and Matrix NMS) is
                ``>= score_thr``; overrides the constructor's. Below ``cfg.model.test.score_thr``
                it lowers the post-processing's thresholds too (:meth:`postprocess_cfg`).

        Returns:
            A :class:`Predictions` for a single input, else a list in input order.
        """
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, Tensor) and images.ndim == 4
        )
        items: Sequence[Any] = [images] if single else images
        tensors = [to_image_tensor(x) for x in items]
        results: list[Predictions | None] = [None] * len(tensors)
        for idx in self.batch_plan(tensors):
            for i, p in zip(idx, self.predict_tensors([tensors[i] for i in idx], score_thr)):
                results[i] = p
        out = [r for r in results if r is not None]
        return out[0] if single else out

    def batch_plan(self, images: Sequence[Tensor]) -> list[list[int]]:
        """Indices of ``images`` grouped by padded network input size, in chunks of
        ``batch_size``: an image's padding, hence its result, never depends on the other images
        of its batch (up to float rounding of batched kernels)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            h, w = resize_keep_ratio_size(int(img.shape[-2]), int(img.shape[-1]), self.scale)
            groups.setdefault(padded_size(h, w, self.size_divisor), []).append(i)
        return [
            g[j : j + self.batch_size]
            for g in groups.values()
            for j in range(0, len(g), self.batch_size)
        ]
