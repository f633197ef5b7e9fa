"""The house rules, checked on the source: no import circles, contracts that import nothing from the
engine, rooms that import only downwards (docs/architecture.md), a top level that holds only the
public modules, no plugin importing another plugin's module, and no file over 300 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"robench": REPO / "robench", "robench_plugins": REPO / "plugins"}
# The plugin contracts: what a third party's package builds on. They may import each other and
# robench.errors, nothing else of robench, so that a plugin never pulls in the engine.
CONTRACTS = {"robench.dataset", "robench.backbone", "robench.strategy", "robench.attack", "robench.attack_steps",
             "robench.defense"}
ALLOWED_FOR_CONTRACTS = CONTRACTS | {"robench.errors"}
MAX_LINES = 300
# The rooms, top to bottom: a module may import its own room and the rooms below it, never one above.
# The top-level modules are public: the API and the plugin helpers (level 4: they may use the engine)
# and the contracts (level 0).
LEVELS = {"robench.__main__": 4, "robench.api": 4, "robench.testing": 4, "robench.cli": 4, "robench.pipeline": 3, "robench.report": 2,
          "robench.data": 2, "robench.core": 1}
PUBLIC_TOP_LEVEL = {"__init__", "__main__", "api", "testing", "attack", "attack_steps", "backbone", "dataset", "defense", "errors",
                    "hookspecs", "strategy", "weights"}
MAX_TOP_LEVEL = 15


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
            submodules = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            # ``from robench.cli import parser`` imports the module robench.cli.parser (and runs the
            # package's __init__, which is not an import of the package's names)
            found |= submodules if len(submodules) == len(node.names) else {node.module} & known.keys() | submodules
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


def level(module: str) -> int:
    """A robench module's room level (0: the package itself, the contracts and the plugin helpers)."""
    return max((n for room, n in LEVELS.items() if module == room or module.startswith(room + ".")), default=0)


def room(module: str) -> str | None:
    """The room (subpackage of robench) a module lives in; None for a top-level module."""
    parts = module.split(".")
    return parts[1] if parts[0] == "robench" and len(parts) > 1 and (REPO / "robench" / parts[1]).is_dir() else None


def test_rooms_import_only_downwards():
    """cli -> pipeline -> report -> core -> contracts (data beside report): a page can be re-made
    without the pipeline, and nothing below the CLI reads a flag."""
    wrong = []
    for name, deps in graph().items():
        if not name.startswith("robench.") and name != "robench":
            continue
        wrong += [f"{name} -> {dep}" for dep in deps if dep.startswith("robench") and level(dep) > level(name)]
        wrong += [f"{name} -> {dep} (a sibling room)" for dep in deps if room(dep) and room(name) and level(dep) == level(name)
                  and room(dep) != room(name)]
    assert not wrong, wrong


def test_top_level_holds_only_the_public_modules():
    top = {path.stem for path in (REPO / "robench").glob("*.py")}
    rooms = {path.name for path in (REPO / "robench").iterdir() if (path / "__init__.py").exists()}
    assert top == PUBLIC_TOP_LEVEL and len(top) <= MAX_TOP_LEVEL, sorted(top ^ PUBLIC_TOP_LEVEL)
    assert rooms == {room.split(".")[1] for room in LEVELS if (REPO / "robench" / room.split(".")[1]).is_dir()}, rooms


def test_every_room_says_what_it_owns_and_may_import():
    for room in (REPO / "robench").iterdir():
        if (room / "__init__.py").exists():
            doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text())) or ""
            assert "Owns" in doc or "owns" in doc, f"{room.name}: its docstring does not say what it owns"
            assert "import" in doc, f"{room.name}: its docstring does not say what it may import"


def test_plugins_examples_and_docs_import_only_public_names():
    """What a plugin author copies names only public modules: the contracts, robench.data, robench.weights,
    robench.testing, the API. An engine room moved is then never a plugin broken."""
    public = {f"robench.{m}" for m in PUBLIC_TOP_LEVEL - {"__init__"}} | {"robench", "robench.data", "robench.data.files",
                                                                          "robench.data.images", "robench.data.split",
                                                                          "robench.data.tables"}
    pattern = re.compile(r"^\s*(?:from (robench[\w.]*) import|import (robench[\w.]*))", re.M)
    sources = [*(REPO / "plugins").rglob("*.py"), *(REPO / "docs").rglob("*.py"), *(REPO / "docs").rglob("*.md")]
    private = sorted({f"{path.relative_to(REPO)}: {a or b}" for path in sources for a, b in pattern.findall(path.read_text())
                      if (a or b).split(".")[0] == "robench" and (a or b) not in public})
    assert not private, private


def test_nothing_below_the_cli_reaches_back_to_the_runner():
    """The runner hands the settled Plan down; no step imports it to read a setting back."""
    allowed = {"robench.api", "robench.cli.run_command", "robench.pipeline.runner"}
    callers = {name for name, deps in graph().items() if "robench.pipeline.runner" in deps and name.startswith("robench")}
    assert callers <= allowed, sorted(callers - allowed)
