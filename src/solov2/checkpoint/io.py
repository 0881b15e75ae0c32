"""Atomic, pickle-free checkpoints: saving, loading, ``last_checkpoint`` and resume look-up.

Resume checkpoints are written with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so they may hold only plain data: tensors, numbers, strings,
``None``, lists, tuples and dicts. The config travels as a plain dict and RNG states as tensors
(:func:`solov2.checkpoint.rng.capture_rng_state`). Released weights are ``.safetensors`` files
with the config stored as JSON in the metadata.

File names follow detectron2: ``model_{iter:07d}.pth``, ``model_final.pth`` and a
``last_checkpoint`` text file naming the newest checkpoint of an output directory.

Every write goes through :func:`solov2.utils.fileio.atomic_write` (temporary file, ``fsync``,
atomic rename), so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from ..errors import CheckpointError
from ..utils.fileio import PathLike, atomic_write, atomic_write_text

__all__ = [
    "LAST_CHECKPOINT",
    "find_resume",
    "is_safetensors",
    "load_checkpoint",
    "save_checkpoint",
    "save_safetensors",
    "tensors_to_cpu",
    "write_last_checkpoint",
]

LAST_CHECKPOINT = "last_checkpoint"
_TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".bin", ".ckpt")
_ITER_CKPT = re.compile(r"^model_(\d+)\.pth$")


# ----------------------------------------------------------------------------------------------
# torch checkpoints


def tensors_to_cpu(obj: Any) -> Any:
    """``obj`` with every GPU tensor (in nested dicts, lists and tuples) copied to CPU memory.

    All copies are queued at once into pinned buffers and waited for once: ``torch.save`` of GPU
    tensors would copy them one by one, each with its own host-device sync (about 600 for an R50
    model plus its optimizer state), stalling the GPU for the whole serialisation.
    """
    found: list[torch.Tensor] = []

    def walk(o: Any) -> Any:
        if isinstance(o, torch.Tensor) and o.device.type != "cpu":
            out = torch.empty(
                o.shape, dtype=o.dtype, device="cpu", pin_memory=o.device.type == "cuda"
            )
            out.copy_(o.detach(), non_blocking=True)
            found.append(o)
            return out
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(walk(v) for v in o)
        return o

    out = walk(obj)
    if any(t.device.type == "cuda" for t in found):
        torch.cuda.synchronize()
    return out


def save_checkpoint(path: PathLike, state: dict[str, Any]) -> None:
    """Atomically ``torch.save`` a resume checkpoint.

    ``state`` must be plain data (tensors, numbers, strings, ``None``, lists, tuples, dicts)
    so that ``torch.load(weights_only=True)`` reads it back. Anything else is detected in the
    written file before it replaces ``path`` and raises :class:`TypeError` naming the classes.
    """
    path = Path(path)
    state = tensors_to_cpu(state)

    def _write(f: IO[bytes]) -> None:
        torch.save(state, f)
        f.flush()
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(f.name)
        if unsafe:
            raise TypeError(
                f"{path}: checkpoint state holds Python objects that weights_only loading "
                f"refuses ({', '.join(sorted(unsafe))}); store plain dicts/lists/tensors instead"
            )

    atomic_write(path, _write)


def _first_line(e: BaseException) -> str:
    """The first line of ``e``'s message, cut after its first sentence: torch follows its
    reason with a paragraph of advice (``... failed finding central directory. This is an
    internal miniz error. If you are seeing this error, ...``)."""
    text = str(e).strip()
    if not text:
        return type(e).__name__
    line = text.splitlines()[0]
    return re.split(r"(?<=[a-z)])\. (?=[A-Z])", line, maxsplit=1)[0].rstrip(".")


def _allowed_globals() -> set[str]:
    try:  # private, but it is exactly the list weights_only accepts: imported where its
        # absence (another torch version) is tolerated
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except Exception:
        return set()


def _scan_pickle_globals(path: Path, limit: int = 8) -> list[str]:
    """Names the pickle stream(s) of ``path`` import, found by parsing opcodes (never executing).

    Handles zip checkpoints (``torch.serialization.get_unsafe_globals_in_checkpoint``) and raw or
    legacy-torch pickles (:mod:`pickletools`); best effort, for error messages only.
    """
    if zipfile.is_zipfile(path):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:
            return []
    names: list[str] = []
    try:
        with open(path, "rb") as f:
            for _ in range(limit):  # legacy torch files hold several pickles in a row
                strings: list[str] = []
                for op, arg, _pos in pickletools.genops(f):
                    if op.name == "GLOBAL" and isinstance(arg, str):
                        names.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:
        pass
    allowed = _allowed_globals()
    return [n for n in dict.fromkeys(names) if n not in allowed]


def is_safetensors(path: Path) -> bool:
    """``.safetensors`` suffix, or a header sniff: 8-byte little-endian length, then ``{``."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and not head.startswith(b"PK")


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    device = str(map_location) if not isinstance(map_location, str) else map_location
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({_first_line(e)})") from None
    config: dict[str, Any] | None = None
    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: metadata 'config' is not valid JSON ({e})") from None
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: metadata 'config' is not a JSON object")
    return {"model": state, "config": config}


def _load_torch(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        names = _scan_pickle_globals(path) or list(
            dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", msg))
        )
        if names:
            raise CheckpointError(
                f"{path}: refused to load: the checkpoint contains pickled Python objects "
                f"({', '.join('GLOBAL ' + n for n in names)}), which could run code; "
                "only plain tensors/dicts are accepted"
            ) from None
        detail = re.search(r"WeightsUnpickler error: *\s*(.+?)\s*(?:\n|$)", msg)
        why = detail.group(1) if detail else _first_line(e)
        raise CheckpointError(
            f"{path}: refused to load: not a plain tensor/dict checkpoint, or corrupt ({why})"
        ) from None
    except Exception as e:  # the unpickler raises many types on damaged input
        raise CheckpointError(
            f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {_first_line(e)})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    return obj


def load_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without ever unpickling code.

    Args:
        path: a ``.pth``/``.pt`` file (read with ``torch.load(weights_only=True)``), a
            ``.safetensors`` file (returned as ``{"model": state_dict, "config": dict | None}``),
            or an output directory (its ``last_checkpoint`` file, else ``model_final.pth``,
            else ``model_final.safetensors``).
        map_location: where tensors go.

    Returns:
        The checkpoint dict as saved: our resume checkpoints (``model``, ``optimizer``, ...),
        official mmcv-style ``{"state_dict": ..., "meta": ...}`` dicts, or a bare state dict.
        Key conversion happens elsewhere.

    Raises:
        CheckpointError: missing, truncated or corrupt file; pickled Python objects.
    """
    path = Path(path)
    if path.is_dir():
        resolved = _resolve_dir(path, allow_safetensors=True)
        if resolved is None:
            raise CheckpointError(
                f"{path}: no checkpoint found (no {LAST_CHECKPOINT}, model_final.pth or "
                "model_final.safetensors)"
            )
        path = resolved
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    if is_safetensors(path):
        return _load_safetensors(path, map_location)
    return _load_torch(path, map_location)


# ----------------------------------------------------------------------------------------------
# safetensors


def save_safetensors(
    path: PathLike, model_state: Mapping[str, Tensor], config: Mapping[str, Any] | Any
) -> None:
    """Atomically write model weights as safetensors, with ``config`` as JSON in the metadata.

    Tensors are moved to CPU and made contiguous, unshared copies (safetensors refuses tensors
    that share storage, e.g. tied weights).
    """
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    tensors: dict[str, Tensor] = {}
    for key, value in model_state.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{path}: model_state[{key!r}] is {type(value).__name__}, not a Tensor")
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    metadata = {"config": json.dumps(config), "format": "pt", "producer": "solov2"}
    data = safetensors_bytes(tensors, metadata=metadata)
    atomic_write(path, lambda f: f.write(data))


# ----------------------------------------------------------------------------------------------
# last_checkpoint / resume


def write_last_checkpoint(output_dir: PathLike, filename: PathLike) -> None:
    """Atomically record ``filename`` (stored as its base name) in ``output_dir/last_checkpoint``."""
    atomic_write_text(Path(output_dir) / LAST_CHECKPOINT, Path(filename).name + "\n")


def _latest_iter_checkpoint(directory: Path) -> Path | None:
    best: tuple[int, Path] | None = None
    for p in directory.iterdir():
        m = _ITER_CKPT.match(p.name)
        if m and p.is_file() and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), p)
    return None if best is None else best[1]


def _resolve_dir(directory: Path, allow_safetensors: bool) -> Path | None:
    marker = directory / LAST_CHECKPOINT
    if marker.is_file():
        name = marker.read_text(encoding="utf-8").strip()
        if name:
            target = directory / name
            if not target.is_file():
                raise CheckpointError(
                    f"{marker}: names {name!r}, which does not exist in {directory}"
                )
            return target
    candidates = [directory / "model_final.pth"]
    if allow_safetensors:
        candidates.append(directory / "model_final.safetensors")
    for c in candidates:
        if c.is_file():
            return c
    return _latest_iter_checkpoint(directory)


def find_resume(output_dir_or_file: PathLike) -> Path | None:
    """The checkpoint ``--resume`` should continue from, or ``None`` to start fresh.

    A file path is returned as is (a missing checkpoint file raises). For a directory:
    the file named by ``last_checkpoint``, else ``model_final.pth``, else the
    ``model_NNNNNNN.pth`` with the highest iteration. A missing directory gives ``None``.

    Raises:
        CheckpointError: a named checkpoint file, or the target of ``last_checkpoint``, is missing.
    """
    p = Path(output_dir_or_file)
    if p.is_file():
        return p
    if p.is_dir():
        return _resolve_dir(p, allow_safetensors=False)
    if p.suffix in (*_TORCH_SUFFIXES, ".safetensors"):
        raise CheckpointError(f"{p}: no such checkpoint file")
    return None
