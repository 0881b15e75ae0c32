"""Batched inference on images given as paths, PIL images, numpy arrays or tensors.

    >>> predictor = Predictor.from_checkpoint("runs/demo/model_final.pth")
    >>> r = predictor("photo.jpg")                     # one input -> one Results
    >>> rs = predictor(["a.jpg", "b.png"], score_thr=0.5)      # a list -> a list
    >>> r.class_names, r.category_ids, r.scores, r.masks      # per instance
    >>> r.save("photo_pred.png"); r.to_coco(image_id=1)
    >>> r = predictor("slide.jpg", tile=800)           # sliced inference (solov2.infer.tiling)
    >>> slides = Predictor.from_checkpoint("runs/cells", tile=520, tile_overlap=0.2)  # every call

Images are resized with the config's test scale (keep ratio, bilinear, no antialias), run through
the network in batches, post-processed (:class:`solov2.postprocess.PostProcessor`) and returned on the
CPU at their original size. Images are grouped by padded input size before batching, so the
result for an image does not depend on which other images share its batch (up to float rounding:
batched convolutions may round differently, which can flip borderline mask pixels). Instances
scoring below ``score_thr`` (default 0.3) are dropped; on a CPU the Predictor picks its threads
from the cores free when it is built (``threads``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import torch
from torch import Tensor

from ..config import DEFAULT_SCORE_THR, Config
from ..data.coco_names import category_ids_of, class_names_of
from ..model import SOLOv2
from ..postprocess import PostprocessCfg, PostProcessor, postprocess_cfg
from ..pretrained import resolve_weights
from ..runtime.device import resolve_device
from ..runtime.threads import configure_threads
from ..structures import Predictions
from .images import ImageInput, to_image_tensor
from .loading import ConfigSource, load_for_inference
from .preprocess import padded_size, preprocess_images, resize_keep_ratio_size
from .results import Results
from .tiling import ImageTiles, check_tiling, predict_tiled

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ImageInput", "Predictor", "Threads", "TileOptions", "to_image_tensor"]

logger = logging.getLogger("solov2")

Threads = int | Literal["auto"] | None


class TileOptions(TypedDict, total=False):
    """Sliced inference for every call of a :class:`Predictor` (keywords of the constructor and
    of :meth:`Predictor.from_checkpoint` / :meth:`Predictor.from_pretrained`): ``tile`` (tile
    side in pixels, default None: each image whole) and ``tile_overlap`` (default 0.2), as
    :meth:`Predictor.__call__` takes them per call."""

    tile: int | None
    tile_overlap: float


def _path(image: Any) -> str | None:
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else None


def _set_threads(threads: Threads, device: torch.device) -> None:
    """The Predictor's CPU threads (see :class:`Predictor`)."""
    if threads == "auto":
        if device.type == "cpu":
            note = configure_threads()
            if note:
                logger.info("CPU threads: %s (OMP_NUM_THREADS=N or threads=N sets them)", note)
    elif threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be 'auto', None or an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)


class Predictor:
    """Run a SOLOv2 model on images; returns :class:`~solov2.infer.results.Results`.

    Args:
        model: the network (moved to ``device`` and put in eval mode).
        cfg: its config (test scale, ``model.test`` thresholds, class names, category ids).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda:1"``, ...
        score_thr: the final score an instance needs (see :meth:`__call__`); default 0.3,
            :data:`solov2.config.DEFAULT_SCORE_THR`, as ``solov2 infer`` and the ONNX export.
            ``None`` keeps every instance the post-processing returns (candidates above
            ``model.test.score_thr``, 0.1: dozens of low-scoring masks per image).
        batch_size: images per forward pass.
        threads: CPU intra-op threads, set once here. ``"auto"`` (default): on a CPU device,
            as the commands do (:mod:`solov2.runtime.threads`): the cores not busy right now
            (sampled for 0.2 s), never more than torch's current count (so a
            ``torch.set_num_threads(n)`` made before stays a ceiling), inter-op threads 1;
            nothing when ``OMP_NUM_THREADS`` is set or the device is a GPU. An int: exactly
            that many (``torch.set_num_threads``). ``None``: torch's setting is left alone.
            Threads are process-wide: this changes them for the whole process.
        tile, tile_overlap: keywords (:class:`TileOptions`): sliced inference by default for
            every call (see :meth:`__call__`, which can change them per call).

    Attributes:
        class_names: name of each label. category_ids: the training dataset's COCO id of each
        label (stored in the checkpoint; :func:`solov2.data.coco_names.category_ids_of`). cfg,
        model, device, score_thr, batch_size, tile, tile_overlap, post (the
        :class:`~solov2.postprocess.PostProcessor`).
    """

    def __init__(
        self,
        model: SOLOv2,
        cfg: Config,
        device: str | torch.device = "auto",
        score_thr: float | None = DEFAULT_SCORE_THR,
        batch_size: int = 4,
        threads: Threads = "auto",
        **tiling: Unpack[TileOptions],
    ) -> None:
        unknown = sorted(set(tiling) - set(TileOptions.__annotations__))
        if unknown:
            raise TypeError(f"Predictor got unexpected keyword arguments {unknown}")
        self.tile = tiling.get("tile")
        self.tile_overlap = float(tiling.get("tile_overlap", 0.2))
        if self.tile is not None:
            check_tiling(self.tile, self.tile_overlap)
        self.cfg = cfg
        self.device = resolve_device(device)
        _set_threads(threads, self.device)
        self.model = model.to(self.device).eval()
        self.score_thr = score_thr
        self.batch_size = max(1, int(batch_size))
        self.class_names = class_names_of(cfg)
        self.category_ids = category_ids_of(cfg, self.class_names)
        self.scale = tuple(int(v) for v in cfg.data.test_scale)
        self.size_divisor = int(cfg.data.size_divisor)
        self.post = PostProcessor.from_config(cfg)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        config: ConfigSource = None,
        score_thr: float | None = DEFAULT_SCORE_THR,
        batch_size: int = 4,
        overrides: Sequence[str] = (),
        threads: Threads = "auto",
        **tiling: Unpack[TileOptions],
    ) -> Predictor:
        """Build a predictor from a checkpoint file (``.pth`` / ``.safetensors``) or output dir.

        Args:
            path: our checkpoint (``{"model", "config", ...}``), a ``.safetensors`` release, an
                output directory (``last_checkpoint``), a published name or URL, or a bare state
                dict (needs ``config``); see :func:`~solov2.infer.loading.load_for_inference`.
            config: overrides the stored config: a :class:`Config`, a preset name, a YAML file or
                a dict. Needed when the checkpoint stores none.
            overrides: ``a.b=value`` overrides applied to that config.
            device, score_thr, batch_size, threads, tile, tile_overlap: as :class:`Predictor`.

        Raises:
            CheckpointError: unreadable/unsafe file, official layout (convert it first), no
                config, or weights that do not fit the model.
        """
        model, cfg = load_for_inference(path, config, overrides)
        return cls(model, cfg, device, score_thr, batch_size, threads, **tiling)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        device: str | torch.device = "auto",
        score_thr: float | None = DEFAULT_SCORE_THR,
        batch_size: int = 4,
        progress: bool = True,
        threads: Threads = "auto",
        **tiling: Unpack[TileOptions],
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
        return cls.from_checkpoint(
            resolve_weights(name, progress=progress),
            device=device,
            score_thr=score_thr,
            batch_size=batch_size,
            threads=threads,
            **tiling,
        )

    def postprocess_cfg(self, score_thr: float | None = None) -> PostprocessCfg:
        """``cfg.model.test`` as a :class:`PostprocessCfg`, a final threshold ``score_thr``
        below its candidate or post-NMS threshold lowering them
        (:func:`solov2.postprocess.postprocess_cfg`)."""
        return postprocess_cfg(self.cfg, score_thr)

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
        preds = self.post.with_score_thr(thr)(out, sizes, orig)
        results = []
        for p in preds:
            if thr is not None:  # before the copy: full-size masks are the bulk of the transfer
                keep = p.scores >= thr
                p = Predictions(p.masks[keep], p.labels[keep], p.scores[keep], p.boxes[keep])
            results.append(p.to("cpu"))
        return results

    def __call__(
        self,
        images: ImageInput | ImageTiles | Sequence[ImageInput | ImageTiles],
        score_thr: float | None = None,
        tile: int | None = None,
        tile_overlap: float | None = None,
    ) -> Results | list[Results]:
        """Predict one image or a list of images.

        Args:
            images: one input or a list/tuple of inputs (see :func:`to_image_tensor`); a uint8
                ``[B, 3, H, W]`` tensor counts as a list. Run ``batch_size`` at a time.
            score_thr: keep instances whose final score (after maskness and Matrix NMS) is
                ``>= score_thr``; overrides the constructor's. Below ``cfg.model.test.score_thr``
                it lowers the post-processing's thresholds too (:meth:`postprocess_cfg`).
            tile: sliced inference (:mod:`solov2.infer.tiling`) for large images of small
                objects: each image is cut into ``tile x tile`` tiles at full resolution (a
                file decoded once at its full size), ``batch_size`` tiles per forward pass,
                their instances merged across tile borders by their masks. Each tile is resized
                to the test scale: pick the short side of the images the model was trained
                on (objects then appear at the scale it learned), for training images as large
                as the test scale :func:`~solov2.infer.tiling.native_tile_size` (the test
                scale's short side). ``None``: the constructor's ``tile`` (default None: each
                image whole, resized to the test scale).
            tile_overlap: fraction of a tile its neighbours share, in ``[0, 1)`` (best when
                ``tile_overlap * tile`` is at least the size of the largest objects); ``None``:
                the constructor's (default 0.2, as SAHI).

        Returns:
            A :class:`~solov2.infer.results.Results` for a single input (masks, boxes, labels,
            scores, class names, category ids; ``numpy()``, ``to_coco()``, ``plot()``,
            ``save()``), else a list in input order. Tiled results hold masks as crops in
            their boxes and build a full-size mask only when ``.masks`` is read
            (:class:`~solov2.infer.results.Results`).

        Raises:
            ValueError: a ``tile`` that is not a positive integer or an overlap outside
                ``[0, 1)``.
        """
        single = not isinstance(images, (list, tuple)) and not (
            isinstance(images, Tensor) and images.ndim == 4
        )
        items: Sequence[Any] = [images] if single else cast(Sequence[Any], images)
        tile = self.tile if tile is None else tile
        overlap = self.tile_overlap if tile_overlap is None else float(tile_overlap)
        if tile is not None:
            check_tiling(tile, overlap)
            out = [self._tiled(x, tile, overlap, score_thr) for x in items]
            return out[0] if single else out
        tensors = [
            x.read((0, 0, x.size[1], x.size[0]))
            if isinstance(x, ImageTiles)
            else to_image_tensor(x)
            for x in items
        ]
        results: list[Results | None] = [None] * len(tensors)
        for idx in self.batch_plan(tensors):
            for i, p in zip(idx, self.predict_tensors([tensors[i] for i in idx], score_thr)):
                results[i] = Results(
                    tensors[i], p, self.class_names, self.category_ids, _path(items[i])
                )
        out = [r for r in results if r is not None]
        return out[0] if single else out

    def _tiled(self, image: Any, tile: int, overlap: float, score_thr: float | None) -> Results:
        src = image if isinstance(image, ImageTiles) else ImageTiles(image)
        pred = predict_tiled(self, src, tile, overlap, score_thr)
        path = src.source if isinstance(image, ImageTiles) else _path(image)
        return Results(src, pred, self.class_names, self.category_ids, path)

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
