"""Check the layout rules of issue 19 on the real tree: at most 6 modules directly in
`batchcopy/`, no import cycle between modules (imports inside functions count), no private
name imported from another module, no module over 450 lines, no bare `ensure_future` /
`create_task` (tasks belong to a task group). `python dev/layout_check.py` prints each
breach and exits 1 if there is one (tests/test_layout.py runs it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "batchcopy"
MAX_LINES = 450
MAX_TOP = 6


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path: Path, mods: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module imported, name imported or '', line) for every batchcopy import."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path)
    out: list[tuple[str, str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            if not base.startswith("batchcopy"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in mods:
                    out.append((sub, "", node.lineno))
                else:
                    out.append((base, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("batchcopy"):
                    out.append((alias.name, "", node.lineno))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def breaches() -> list[str]:
    mods = modules()
    out: list[str] = []
    top = [p.name for p in PKG.glob("*.py")]
    if len(top) > MAX_TOP:
        out.append(f"{len(top)} modules directly in batchcopy/ (at most {MAX_TOP}): {sorted(top)}")
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        rel = path.relative_to(ROOT)
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            out.append(f"{rel}: {lines} lines (at most {MAX_LINES})")
        for target, imported, line in imports(path, mods):
            # a package's __init__ re-exporting its own modules is not an edge back
            if target in mods and not (name == target.rsplit(".", 1)[0]):
                graph.setdefault(name, set()).add(target)
            if imported.startswith("_") and not imported.startswith("__"):
                out.append(f"{rel}:{line}: imports the private name {imported} from {target}")
        text = path.read_text(encoding="utf-8")
        for no, src in enumerate(text.splitlines(), 1):
            if "ensure_future(" in src and not src.lstrip().startswith("#"):
                out.append(f"{rel}:{no}: a bare ensure_future (give the task an owner: a TaskGroup)")
    for comp in cycles(graph):
        out.append("import cycle: " + " -> ".join(comp))
    return out


def main() -> int:
    found = breaches()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
