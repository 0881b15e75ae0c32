"""``solov2 weights list`` / ``solov2 weights download NAME...``: the published checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError, did_you_mean
from ..pretrained import PRETRAINED, cache_dir, converted_path, lookup, resolve_weights

__all__ = ["run", "weights_arg"]


def weights_arg(spec: str | None) -> str | None:
    """A ``--checkpoint/--weights/--init`` value as a local path (names and URLs fetched)."""
    if spec is None:
        return None
    path = resolve_weights(spec)
    return spec if Path(spec).exists() else str(path)  # local paths exactly as given


def _cached(source: Any) -> str:
    if converted_path(source).is_file():
        return "converted"
    return "downloaded" if (cache_dir() / source.filename).is_file() else "-"


def _list() -> int:
    rows = [("name", "layout", "mask AP", "sha256", "cached", "url")]
    for entry in PRETRAINED.values():
        for i, s in enumerate(entry.sources):
            name = entry.name if i == 0 else f"{entry.name}@{s.layout}"
            rows.append((name, s.layout, f"{s.ap:.1f}", s.sha256 or "-", _cached(s), s.url))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    print(f"cache: {cache_dir()} (set TORCH_HOME to move it)")
    return 0


def _download(names: list[str], quiet: bool) -> int:
    specs = list(PRETRAINED) if names == ["all"] else names
    for spec in specs:  # only published names here; paths and URLs work in other commands
        try:
            known = lookup(spec) is not None and "://" not in spec
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
        if not known:
            raise UserError(
                f"{spec}: not a known checkpoint name{did_you_mean(spec, PRETRAINED)} "
                f"({', '.join(PRETRAINED)}; "
                "NAME@official for the official file)"
            )
    for spec in specs:
        print(f"{spec}: {resolve_weights(spec, progress=not quiet)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    return _download(args.names, args.quiet)
