"""
Imports flow one way: entry points -> session -> bootstrap/node/cache/monitoring/retention ->
state/servers -> config/store/venues -> errors/retry. A package may import its own layer or a
lower one, and the packages never import each other in a cycle. Function-level imports count too.
"""

from __future__ import annotations

import ast
import collections
from pathlib import Path


LAUNCHER = Path(__file__).resolve().parents[1] / "launcher"

# Lowest first. Each name is a subpackage or top-level module of `launcher`.
LAYERS: list[set[str]] = [
    {"errors", "retry", "stop_signals", "quiet_import"},
    {"config", "store", "venues"},
    {"state", "servers"},
    {"cache", "bootstrap", "node", "monitoring", "retention"},
    {"session"},
    {"cli", "__main__", "drill", "bench"},
]


def _unit(module: str) -> str:
    """``launcher.cache.write.batch`` -> ``cache``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[str]]:
    """For every unit, the other units it imports (module level or inside functions)."""
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for path in LAUNCHER.rglob("*.py"):
        module = ".".join(path.relative_to(LAUNCHER.parent).with_suffix("").parts).removesuffix(".__init__")
        if module == "launcher":
            continue
        source = _unit(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.startswith("launcher.") and _unit(name) != source:
                    edges[source].add(_unit(name))
    return edges


def _layer(unit: str) -> int:
    for index, layer in enumerate(LAYERS):
        if unit in layer:
            return index
    raise AssertionError(f"launcher.{unit} is in no layer of tests/test_layers.py: place it")


def test_every_package_is_placed_in_a_layer():
    units = {p.stem if p.is_file() else p.name for p in LAUNCHER.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    for unit in units:
        _layer(unit)


def test_no_package_imports_a_higher_layer():
    upward = sorted(
        f"launcher.{source} (layer {_layer(source)}) imports launcher.{target} (layer {_layer(target)})"
        for source, targets in _imports().items()
        for target in targets
        if _layer(target) > _layer(source)
    )
    assert not upward, "\n".join(upward)


def test_packages_import_each_other_without_cycles():
    edges = _imports()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(unit: str) -> None:
        if unit in done:
            return
        assert unit not in visiting, f"import cycle: {' -> '.join([*visiting[visiting.index(unit):], unit])}"
        visiting.append(unit)
        for target in sorted(edges.get(unit, ())):
            visit(target)
        visiting.pop()
        done.add(unit)

    for unit in sorted(edges):
        visit(unit)
