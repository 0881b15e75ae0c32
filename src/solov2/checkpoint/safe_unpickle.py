"""Read published mmdetection / mmengine / official SOLO checkpoints without running their code.

``torch.load(weights_only=True)`` refuses any file whose pickle names a class outside torch's
short list, and published checkpoints often carry such metadata: mmengine's ``message_hub``
(a pickled ``mmengine.logging.MessageHub`` holding ``HistoryBuffer`` objects and numpy arrays),
numpy scalars, config objects. :func:`load_untrusted` reads them with :class:`SafeUnpickler`, a
:class:`pickle.Unpickler` whose ``find_class`` never imports anything:

- torch's tensor-rebuild functions (wrapped: no backward hooks or object state are attached;
  parameters come back as plain tensors), dtypes, ``torch.Size``, ``collections.OrderedDict``,
  ``set``/``frozenset``/``complex`` and ``_codecs.encode`` (bytes in protocol 2) are resolved
  from an explicit table; torch's own unpickler wrapper maps the storage types;
- every other name (``os.system``, ``builtins.open``, ``mmengine.logging.MessageHub``, ...) is
  replaced by an inert :class:`Placeholder` subclass: "calling" it or restoring its state just
  records the arguments, so nothing named in the file is imported or executed.

:func:`load_untrusted` then refuses a file whose weights hold placeholders (naming them), and
keeps placeholders found elsewhere (metadata) as inert records, listed by :func:`placeholders_in`.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import re
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import CheckpointError

__all__ = ["Placeholder", "SafeUnpickler", "load_untrusted", "placeholders_in"]


class Placeholder:
    """Stand-in for an object of a class that was not imported (its name: :attr:`global_name`).

    Attributes:
        args: positional arguments it was "called" / created with. kwargs: keyword arguments.
        state: what ``BUILD`` would have restored (``__setstate__``). items, mapping: what
            ``APPEND(S)`` / ``SETITEM(S)`` added.
    """

    global_name = "?"
    # set per instance by __new__ (through __dict__: no attribute hook of a pickled class runs)
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]
    mapping: dict[Any, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items=[], mapping={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.mapping[key] = value

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Placeholder:
        return _placeholder_class(f"{self.global_name}()")(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


_CLASSES: dict[str, type[Placeholder]] = {}


def _placeholder_class(global_name: str) -> type[Placeholder]:
    cls = _CLASSES.get(global_name)
    if cls is None:
        ident = re.sub(r"\W", "_", global_name.rsplit(".", 1)[-1])[:60] or "Unknown"
        cls = type(ident, (Placeholder,), {"global_name": global_name})
        _CLASSES[global_name] = cls
    return cls


def _tensor(t: Any) -> Tensor:
    if type(t) is not Tensor:
        raise pickle.UnpicklingError(f"expected a tensor, found {type(t).__name__}")
    return t


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any) -> Tensor:
    return _tensor(torch._utils._rebuild_tensor(storage, offset, size, stride))


def _rebuild_tensor_v2(
    storage: Any,
    offset: int,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    """torch's ``_rebuild_tensor_v2`` without the pickled hooks (never attached)."""
    t = _rebuild_tensor(storage, offset, size, stride)
    if isinstance(metadata, dict) and metadata:
        torch._utils.set_tensor_metadata(t, metadata)
    return t


def _rebuild_tensor_v3(storage: Any, offset: int, size: Any, stride: Any, *rest: Any) -> Tensor:
    """torch's ``_rebuild_tensor_v3``; ``rest`` is ``(requires_grad, backward_hooks, dtype[,
    metadata])`` as pickled (the hooks never attached)."""
    dtype, metadata = rest[2], (rest[3] if len(rest) > 3 else None)
    if not isinstance(dtype, torch.dtype):
        raise pickle.UnpicklingError(f"expected a dtype, found {type(dtype).__name__}")
    t = torch.empty((0,), dtype=dtype, device=storage._untyped_storage.device)
    t.set_(storage._untyped_storage, offset, size, stride)
    if isinstance(metadata, dict) and metadata:
        torch._utils.set_tensor_metadata(t, metadata)
    return t


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> Tensor:
    """A pickled ``nn.Parameter`` as its plain tensor (no hooks, no object state)."""
    return _tensor(data)


def _storage_from_bytes(data: Any) -> Any:
    """A storage pickled on its own (plain ``pickle`` of tensors): the bytes are a torch file,
    read with this same restricted unpickler."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("_load_from_bytes: expected bytes")
    return torch.load(
        io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE
    )


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode: only str in latin1/utf-8 (pickled bytes)")
    return text.encode(encoding)


_ALLOWED: dict[str, Callable[..., Any]] = {
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _storage_from_bytes,
    "torch.Size": torch.Size,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "_codecs.encode": _codecs_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED` names (and torch dtypes); every other
    global becomes an inert :class:`Placeholder` subclass. Nothing is ever imported."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol 2 spellings (__builtin__)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = f"{module}.{name}"
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and name.isidentifier():
            value = torch.__dict__.get(name)
            if isinstance(value, torch.dtype):
                return value
        return _placeholder_class(key)


def _load(f: Any, **kwargs: Any) -> Any:
    return SafeUnpickler(f, **kwargs).load()


# what torch.load(pickle_module=...) needs: ``Unpickler`` (zip files) and ``load`` (legacy files);
# set on a fresh module object, which the type checker sees without these attributes
_PICKLE_MODULE = types.ModuleType("solov2_safe_unpickle")
_PICKLE_MODULE.Unpickler = SafeUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = _load  # type: ignore[attr-defined]
_PICKLE_MODULE.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]


def placeholders_in(obj: Any, limit: int = 10_000) -> list[str]:
    """Names of the :class:`Placeholder` objects inside ``obj`` (dicts, lists, tuples, sets,
    and the arguments/state of placeholders), without duplicates, in the order found."""
    found: dict[str, None] = {}
    seen: set[int] = set()
    stack = [obj]
    while stack and len(seen) < limit:
        o = stack.pop()
        if isinstance(o, (Tensor, str, bytes, int, float, type(None))) or id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, Placeholder):
            found[o.global_name] = None
            stack.extend([o.args, o.kwargs, o.state, o.items, o.mapping])
        elif isinstance(o, type) and issubclass(o, Placeholder):
            found[o.global_name] = None
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
    return list(found)


def _weights_of(ckpt: Any) -> Any:
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                return ckpt[key]
    return ckpt


def load_untrusted(path: str | Path) -> dict[str, Any]:
    """Load a torch checkpoint (zip or legacy format) or a plain pickle without running code.

    Returns:
        The checkpoint dict, tensors on the CPU. Objects of other classes are
        :class:`Placeholder` records (see :func:`placeholders_in`).

    Raises:
        CheckpointError: missing/corrupt file; not a dict; or weights (``state_dict`` /
            ``model`` entry, or the whole dict) holding objects other than tensors of known
            classes: ``refused to load: ... (GLOBAL module.name, ...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                obj = torch.load(
                    path, map_location="cpu", weights_only=False, pickle_module=_PICKLE_MODULE
                )
            except RuntimeError as e:
                if "Invalid magic number" not in str(e):
                    raise
                with open(path, "rb") as f:  # a plain pickle, not a torch file
                    obj = SafeUnpickler(f).load()
    except Exception as e:  # the unpickler raises many types on damaged input
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"{path}: corrupt, truncated or not a checkpoint ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(obj).__name__}")
    bad = placeholders_in(_weights_of(obj))
    if bad:
        raise CheckpointError(
            f"{path}: refused to load: its weights contain pickled Python objects "
            f"({', '.join('GLOBAL ' + n for n in bad[:8])}), not tensors; nothing was run"
        )
    return obj
