"""Import rules of the code base, checked from the source (no module is executed).

    python -m tools.imports [ROOT]     prints every violation; exit status 1 if any

Every ``import`` statement of ``protocol/``, ``plugin/``, ``backend/`` and ``tools/`` is
parsed with :mod:`ast`, including imports inside functions (a lazy import is still a
dependency). The rules:

1. **Layers.** Each module belongs to a layer, lowest first::

       protocol < backend (package root), backend.config < backend.reports
                < backend.models < backend.inference < backend.learning
                < backend.daemon < backend.__main__ < tools

   A module may import its own layer and the layers below it, never one above.
   ``plugin`` stands beside the backend: it may import itself and ``protocol`` only.
2. **No cycles** between modules (strongly connected components of the module graph).
3. **Boundaries.** The backend and protocol never import ``qgis`` (or PyQt);
   ``protocol`` imports only the standard library, numpy, scipy and pyzmq (it ships
   inside the QGIS plugin); ``plugin`` never imports torch, rasterio or the backend; no
   runtime module (protocol, plugin, backend) imports ``tools``.

The plugin is installed as the package ``ortholens``; in the repository it is ``plugin``.
Its relative imports resolve either way, and this check resolves them to ``plugin``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

#: Top-level packages whose modules are checked.
PACKAGES = ("protocol", "plugin", "backend", "tools")

#: ``(module prefix, rank)``; the longest matching prefix gives a module's layer.
LAYERS: Tuple[Tuple[str, int], ...] = (
    ("protocol", 0),
    ("backend", 1),
    ("backend.config", 1),
    ("backend.reports", 2),
    ("backend.models", 3),
    ("backend.inference", 4),
    ("backend.learning", 5),
    ("backend.daemon", 6),
    ("backend.__main__", 7),
    ("tools", 8),
)

#: Third-party top-level modules ``protocol`` may import (besides the standard library).
PROTOCOL_THIRD_PARTY = {"numpy", "scipy", "zmq"}
#: Third-party modules the plugin must never import (they belong to the engine).
PLUGIN_FORBIDDEN = {"torch", "rasterio", "onnxruntime", "segmentation_models_pytorch",
                    "timm", "ray"}
QT_MODULES = {"qgis", "PyQt5", "PyQt6", "sip"}


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` module imports ``target`` (both dotted), at ``where``
    (``path:line``)."""

    source: str
    target: str
    where: str


def module_name(root: Path, path: Path) -> str:
    """Dotted module name of ``path`` (a ``.py`` file under ``root``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: Optional[str]) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def collect(root: Path) -> Tuple[Set[str], List[Edge], List[Edge]]:
    """Parse every module under ``root``'s :data:`PACKAGES`.

    Returns:
        ``(modules, internal, external)``: dotted names of our modules; imports of our
        modules (targets resolved to the module imported: ``from a import b`` points to
        ``a.b`` when that is a module); imports of anything else (top-level name only).

    Raises:
        SyntaxError: a file does not parse.
    """
    files: Dict[str, Path] = {}
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            if "__pycache__" not in p.parts:
                files[module_name(root, p)] = p
    modules = set(files)
    internal: List[Edge] = []
    external: List[Edge] = []
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (_resolve_relative(mod, is_pkg, node.level, node.module)
                        if node.level else (node.module or ""))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                where = f"{path.relative_to(root)}:{node.lineno}"
                if t.split(".")[0] not in PACKAGES:
                    external.append(Edge(mod, t.split(".")[0], where))
                elif t != mod:  # ours; a target that is no module is reported as missing
                    internal.append(Edge(mod, t, where))
    return modules, internal, external


def layer(module: str) -> Optional[int]:
    """The rank of ``module``'s layer (see :data:`LAYERS`); None for ``plugin``."""
    best, rank = -1, None
    for prefix, r in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
            best, rank = len(prefix), r
    return rank


def cycles(modules: Iterable[str], edges: Iterable[Edge]) -> List[List[str]]:
    """Import cycles: the strongly connected components of more than one module
    (Tarjan's algorithm), each sorted."""
    graph: Dict[str, Set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.target in graph:
            graph[e.source].add(e.target)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(root: Path) -> List[str]:
    """Every broken rule under ``root``, one sentence each (empty when all hold)."""
    modules, internal, external = collect(root)
    out: List[str] = []
    for e in internal:
        src_top, dst_top = e.source.split(".")[0], e.target.split(".")[0]
        if e.target not in modules:
            out.append(f"{e.where}: {e.source} imports {e.target}, which does not exist")
        elif src_top != "tools" and dst_top == "tools":
            out.append(f"{e.where}: runtime module {e.source} imports {e.target} from tools/")
        elif src_top == "plugin" and dst_top != "plugin" and dst_top != "protocol":
            out.append(f"{e.where}: plugin module {e.source} imports {e.target}")
        elif src_top != "plugin" and dst_top == "plugin" and src_top != "tools":
            out.append(f"{e.where}: {e.source} imports the plugin ({e.target})")
        else:
            ls, lt = layer(e.source), layer(e.target)
            if ls is not None and lt is not None and lt > ls:
                out.append(f"{e.where}: {e.source} (layer {ls}) imports {e.target} "
                           f"(layer {lt}), a higher layer")
    for e in external:
        top = e.source.split(".")[0]
        if top in ("backend", "protocol") and e.target in QT_MODULES:
            out.append(f"{e.where}: {e.source} imports {e.target} (QGIS/Qt)")
        elif top == "plugin" and e.target in PLUGIN_FORBIDDEN:
            out.append(f"{e.where}: plugin module {e.source} imports {e.target}")
        elif top == "protocol" and e.target not in PROTOCOL_THIRD_PARTY \
                and e.target not in sys.stdlib_module_names and e.target != "__future__":
            out.append(f"{e.where}: protocol module {e.source} imports {e.target}, "
                       f"which is neither the standard library nor one of "
                       f"{sorted(PROTOCOL_THIRD_PARTY)}")
    for comp in cycles(modules, internal):
        out.append("import cycle: " + " -> ".join(comp + [comp[0]]))
    return list(dict.fromkeys(out))  # one line per statement, not per imported name


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    found = violations(root)
    for line in found:
        print(line)
    print(f"{len(found)} import rule violation(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
