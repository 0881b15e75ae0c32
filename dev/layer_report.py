"""Shape of the package's import graph and code, from the AST (nothing is imported).

Prints: files and lines under ``src/solov2``; imports between the package's own modules (at
module level, inside functions, under ``TYPE_CHECKING``); imports from a lower layer to a
higher one (the layers of ``docs/ARCHITECTURE.md``, with the modules of the tree before issue
26 mapped onto them); import cycles (strongly connected components of the module graph,
``TYPE_CHECKING`` imports left out); modules outside ``solov2.cli`` that import ``argparse``;
the longest function, the longest file and the largest parameter list.

    python3 dev/layer_report.py [SRC_DIR]      # default: src (run it on another checkout's src
                                               # for a before/after comparison)
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PKG = "solov2"

# (module prefix, layer): the longest matching prefix wins; higher layers may import lower ones.
# New names (issue 26) and the names they replaced, each at the layer of its concern.
LAYERS: list[tuple[str, int]] = [
    # 0: torch-free config layer and small utilities (the package root ``solov2`` is the public
    # facade, importing on first use: it is not layered)
    ("solov2.errors", 0),
    ("solov2.config", 0),
    ("solov2.presets", 0),
    ("solov2.utils", 0),
    # 1: tensor operators, data structures, process plumbing
    ("solov2.ops", 1),
    ("solov2.structures", 1),
    ("solov2.runtime", 1),
    ("solov2.engine.dist", 1),
    ("solov2.engine.threads", 1),
    # 2: the model and the pure training functions
    ("solov2.model", 2),
    ("solov2.targets", 2),
    ("solov2.losses", 2),
    # 3: post-processing, data, checkpoint I/O
    ("solov2.postprocess", 3),
    ("solov2.data", 3),
    ("solov2.checkpoint", 3),
    ("solov2.engine.checkpoint", 3),
    ("solov2.engine.safe_unpickle", 3),
    ("solov2.engine.weights", 3),
    # 4: checkpoint conversion, then 5: published weights (download + convert)
    ("solov2.convert", 4),
    ("solov2.pretrained", 5),
    # 6: evaluation and inference (siblings)
    ("solov2.evaluation", 6),
    ("solov2.engine.evaluate", 6),
    ("solov2.engine.coco_eval", 6),
    ("solov2.engine.score_results", 6),
    ("solov2.infer", 6),
    # 7: training
    ("solov2.train", 7),
    ("solov2.engine", 7),
    # 8: benchmarks
    ("solov2.benchmarks", 8),
    ("solov2.bench", 8),
    ("solov2.engine.complexity", 8),
    # 9: the command layer
    ("solov2.cli", 9),
    ("solov2.cli_args", 9),
    ("solov2.weights_cmd", 9),
    ("solov2.engine.run", 9),
    ("solov2.infer.infer_cmd", 9),
    ("solov2.data.inspect_cmd", 9),
    ("solov2.__main__", 9),
]


def layer_of(module: str) -> int:
    best, depth = 0, -1
    for prefix, layer in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
            best, depth = layer, prefix.count(".")
    return best


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class _Visitor(ast.NodeVisitor):
    """Imports with where they sit: ``(target, line, in_function, type_checking)``."""

    def __init__(self, module: str, is_pkg: bool, modules: set[str]) -> None:
        self.module, self.is_pkg, self.modules = module, is_pkg, modules
        self.imports: list[tuple[str, int, bool, bool]] = []
        self.external: list[tuple[str, int, bool]] = []
        self.depth = 0
        self.tc = 0

    def _base(self, level: int, name: str | None) -> str:
        if level == 0:
            return name or ""
        parts = self.module.split(".")
        keep = len(parts) - level + (1 if self.is_pkg else 0)
        base = ".".join(parts[:keep])
        return f"{base}.{name}" if name else base

    def _add(self, target: str, node: ast.stmt) -> None:
        if target == PKG or target.startswith(PKG + "."):
            while target not in self.modules and "." in target:
                target = target.rsplit(".", 1)[0]
            self.imports.append((target, node.lineno, self.depth > 0, self.tc > 0))
        else:
            self.external.append((target.split(".")[0], node.lineno, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
        for a in node.names:
            self._add(a.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
        base = self._base(node.level, node.module)
        subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.modules]
        if subs:  # ``from . import sub``: each submodule is an import
            for s in subs:
                self._add(s, node)
        else:
            self._add(base, node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = _function  # noqa: N815
    visit_AsyncFunctionDef = _function  # noqa: N815

    def visit_If(self, node: ast.If) -> None:  # noqa: N802
        test = ast.unparse(node.test)
        if test in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            self.tc += 1
            for n in node.body:
                self.visit(n)
            self.tc -= 1
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)


def functions(tree: ast.AST) -> list[tuple[str, int, int]]:
    """``(qualified name, lines, parameters)`` of every function (``self``/``cls`` not counted,
    as ruff's PLR0913 does not count them)."""
    out: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = child.args
                params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
                n = len(params) - (1 if params and params[0].arg in ("self", "cls") else 0)
                lines = (child.end_lineno or child.lineno) - child.lineno + 1
                out.append((f"{prefix}{child.name}", lines, n))
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    walk(tree, "")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def main(argv: list[str]) -> int:
    src = Path(argv[0] if argv else "src")
    files = sorted((src / PKG).rglob("*.py"))
    modules = {module_name(src, f) for f in files}
    graph: dict[str, set[str]] = defaultdict(set)
    internal = in_func = type_only = 0
    up: list[str] = []
    argparse_users: list[str] = []
    lazy_external: list[str] = []
    total_lines = 0
    longest_file = ("", 0)
    funcs: list[tuple[str, int, int]] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        n = len(text.splitlines())
        total_lines += n
        mod = module_name(src, f)
        rel = f.relative_to(src).as_posix()
        longest_file = max(longest_file, (rel, n), key=lambda t: t[1])
        tree = ast.parse(text)
        v = _Visitor(mod, f.name == "__init__.py", modules)
        v.visit(tree)
        for target, line, func, tc in v.imports:
            if target == mod:
                continue
            internal += 1
            in_func += func
            type_only += tc
            if not tc:
                graph[mod].add(target)
            if mod != PKG and layer_of(target) > layer_of(mod):
                up.append(
                    f"{rel}:{line} {mod} (layer {layer_of(mod)}) -> {target} "
                    f"(layer {layer_of(target)})"
                )
        for name, line, func in v.external:
            if name == "argparse" and not (mod == "solov2.cli" or mod.startswith("solov2.cli.")):
                argparse_users.append(f"{rel}:{line}")
            if func:
                lazy_external.append(f"{rel}:{line} {name}")
        funcs += [(f"{rel}:{q}", ln, p) for q, ln, p in functions(tree)]
    cyc = cycles(graph)
    longest_fn = max(funcs, key=lambda t: t[1])
    widest = max(funcs, key=lambda t: t[2])
    print(f"files: {len(files)}, lines: {total_lines}")
    print(
        f"imports between the package's modules: {internal} ({in_func} inside functions, "
        f"{type_only} under TYPE_CHECKING)"
    )
    print(f"imports of other packages inside functions: {len(lazy_external)}")
    print(f"imports from a lower layer to a higher one: {len(up)}")
    for line in up:
        print(f"  {line}")
    print(f"import cycles: {len(cyc)}")
    for c in cyc:
        print(f"  {' <-> '.join(c)}")
    print(
        f"modules outside solov2.cli importing argparse: {len(argparse_users)}"
        + (f" ({', '.join(argparse_users)})" if argparse_users else "")
    )
    print(f"longest function: {longest_fn[1]} lines ({longest_fn[0]})")
    print(f"longest file: {longest_file[1]} lines ({longest_file[0]})")
    print(f"largest parameter list: {widest[2]} ({widest[0]})")
    print(
        f"functions over 80 lines: {sum(ln > 80 for _, ln, _ in funcs)}, files over 400 "
        f"lines: {sum(len(f.read_text().splitlines()) > 400 for f in files)}, parameter "
        f"lists over 7: {sum(p > 7 for _, _, p in funcs)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
