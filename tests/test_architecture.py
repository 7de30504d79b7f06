"""The layering of ``avrec``, checked on the source: every import (lazy ones inside functions included),
no module cycles, no package reaching into another's underscore names, and no oversized files.

Layers, bottom to top (docs/architecture.md): a module may import its own package and the layers
below its own, never a sibling package of the same layer nor anything above.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "avrec"

LAYERS: list[set[str]] = [
    {"errors"},
    {"config", "seeding", "__init__"},
    {"data"},
    {"encoders", "eval", "kg", "run", "training"},
    {"finetune"},
    {"models"},
    {"pipeline"},
    {"policies"},
    {"explain"},
    {"serve"},
    {"cli", "testing"},
]
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}
# `avrec/__init__.py` re-exports a few names from `data` for users; it is the package's front door.
ALLOWED = {("__init__", "data")}
MAX_LINES = 420


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every avrec module imported anywhere in the file, resolved to a module that exists."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name == "avrec" or name.startswith("avrec."):
                while name not in MODULES and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in MODULES and name != module:
                    found.append((name, node.lineno))
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in MODULES} - set(LAYER_OF))
    assert not missing, f"packages without a layer in LAYERS (and docs/architecture.md): {missing}"


def test_imports_only_go_down():
    bad = []
    for module, imports in GRAPH.items():
        own = _package(module)
        for target, line in imports:
            other = _package(target)
            if other == own or (own, other) in ALLOWED:
                continue
            if LAYER_OF[other] >= LAYER_OF[own]:
                bad.append(f"{MODULES[module].relative_to(SRC.parent)}:{line} imports {target} "
                           f"({own}, layer {LAYER_OF[own]} -> {other}, layer {LAYER_OF[other]})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_nothing_imports_the_cli():
    bad = [f"{m}:{line}" for m, imports in GRAPH.items() if _package(m) != "cli"
           for target, line in imports if _package(target) == "cli"]
    assert not bad


def test_no_module_cycles():
    edges = defaultdict(set)
    for module, imports in GRAPH.items():
        for target, _ in imports:
            # a package's __init__ re-exporting its own modules is not a cycle of behaviour
            if not target.startswith(module + "."):
                edges[module].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _private_names_by_package() -> dict[str, set[str]]:
    """Underscore names each package defines (functions, classes, attributes assigned anywhere)."""
    defined: dict[str, set[str]] = defaultdict(set)
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            if name and name.startswith("_") and not name.startswith("__"):
                defined[_package(module)].add(name)
    return defined


def test_no_package_touches_another_packages_private_names():
    defined = _private_names_by_package()
    bad = []
    for module, path in MODULES.items():
        own = _package(module)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("avrec."):
                target = _package(node.module)
                for alias in node.names:
                    if alias.name.startswith("_") and target != own:
                        bad.append(f"{module}:{node.lineno} imports {node.module}.{alias.name}")
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
                continue
            if attr in defined[own]:
                continue  # the package's own private name, used on another of its objects
            owners = sorted(p for p, names in defined.items() if attr in names)
            if owners:
                bad.append(f"{path.relative_to(SRC.parent)}:{node.lineno} uses {attr} (private to {', '.join(owners)})")
    assert not bad, "cross-package private access:\n" + "\n".join(bad)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_file_over_the_size_limit(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(SRC.parent)} has {n} lines (limit {MAX_LINES}): split it"
