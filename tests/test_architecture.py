"""The house rules, checked on the source: no import circles, contracts that import nothing from the
engine, no plugin importing another plugin's module, and no file over 300 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"robench": REPO / "robench", "robench_plugins": REPO / "plugins"}
# The plugin contracts: what a third party's package builds on. They may import each other and
# robench.errors, nothing else of robench, so that a plugin never pulls in the engine.
CONTRACTS = {"robench.dataset", "robench.backbone", "robench.strategy", "robench.attack", "robench.attack_steps",
             "robench.defense"}
ALLOWED_FOR_CONTRACTS = CONTRACTS | {"robench.errors"}
MAX_LINES = 300


def modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            name = ".".join([package, *path.with_suffix("").relative_to(root).parts]).removesuffix(".__init__")
            found[name] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules a file imports, at any depth of the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {c for c in [node.module, *(f"{node.module}.{a.name}" for a in node.names)] if c in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_no_import_circles():
    edges, cycles = graph(), []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_contracts_import_nothing_from_the_engine():
    edges = graph()
    for contract in CONTRACTS:
        engine = {m for m in edges[contract] if m.startswith("robench.") and m not in ALLOWED_FOR_CONTRACTS}
        assert not engine, f"{contract} imports {sorted(engine)}"


def test_no_plugin_imports_another_plugins_module():
    """A built-in may import its own package's modules (ham10000's loaders), never another plugin's."""
    edges = graph()
    for name, deps in edges.items():
        if not name.startswith("robench_plugins."):
            continue
        home = name.split(".")[:3]  # robench_plugins.<kind>.<plugin>
        foreign = {d for d in deps if d.startswith("robench_plugins.") and d.split(".")[:3] != home}
        assert not foreign, f"{name} imports {sorted(foreign)}: make what it shares public in a robench contract"


def test_no_file_over_300_lines():
    long = {str(path.relative_to(REPO)): n for path in modules().values() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long
