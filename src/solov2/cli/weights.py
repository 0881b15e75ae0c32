"""``solov2 weights list`` / ``solov2 weights download NAME...``: the published checkpoints."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import UserError

__all__ = ["add_weights_parser", "cmd_weights", "weights_arg"]


def add_weights_parser(sub: Any) -> None:
    """Register ``weights`` on the CLI's subparsers."""
    w = sub.add_parser("weights", help="published COCO checkpoints: list, download + convert")
    ws = w.add_subparsers(dest="action", required=True)
    ws.add_parser("list", help="known names, sources, published AP, what is cached")
    d = ws.add_parser("download", help="download, verify and convert into torch hub's cache")
    d.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="a name from `solov2 weights list` (NAME@official for the official file), or 'all'",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")


def weights_arg(spec: str | None) -> str | None:
    """A ``--checkpoint/--weights/--init`` value as a local path (names and URLs fetched)."""
    if spec is None:
        return None
    from pathlib import Path

    from .pretrained import resolve_weights

    path = resolve_weights(spec)
    return spec if Path(spec).exists() else str(path)  # local paths exactly as given


def _cached(source: Any) -> str:
    from .pretrained import cache_dir, converted_path

    if converted_path(source).is_file():
        return "converted"
    return "downloaded" if (cache_dir() / source.filename).is_file() else "-"


def _list() -> int:
    from .pretrained import PRETRAINED, cache_dir

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
    from .pretrained import PRETRAINED, lookup, resolve_weights

    specs = list(PRETRAINED) if names == ["all"] else names
    for spec in specs:  # only published names here; paths and URLs work in other commands
        try:
            known = lookup(spec) is not None and "://" not in spec
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
        if not known:
            raise UserError(
                f"{spec}: not a known checkpoint name ({', '.join(PRETRAINED)}; "
                "NAME@official for the official file)"
            )
    for spec in specs:
        print(f"{spec}: {resolve_weights(spec, progress=not quiet)}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _list()
    return _download(args.names, args.quiet)
