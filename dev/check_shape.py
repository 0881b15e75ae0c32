"""Code-shape limits of ``src/`` (run by ``make check``): no file over 400 lines, no function over
80 lines (parameter lists over 7 are ruff's PLR0913, configured in pyproject.toml).

    python3 dev/check_shape.py [DIR ...]       # default: the repository's src/

Prints each offender as ``path:line: what`` and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def offenders(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    out = []
    n = len(text.splitlines())
    if n > MAX_FILE_LINES:
        out.append(f"{path}:1: file has {n} lines (limit {MAX_FILE_LINES})")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(
                    f"{path}:{node.lineno}: function {node.name} has {lines} lines "
                    f"(limit {MAX_FUNCTION_LINES})"
                )
    return out


def main(argv: list[str]) -> int:
    found = []
    default = Path(__file__).resolve().parents[1] / "src"
    for root in [Path(a) for a in argv] or [default]:
        for path in sorted(root.rglob("*.py")) if root.is_dir() else [root]:
            found += offenders(path)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
