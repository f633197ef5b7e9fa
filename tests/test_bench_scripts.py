"""Every script in bench/ still imports against this robench, and every name its functions read from
robench (a global, or an attribute of an imported module) still exists: a renamed function breaks
the suite, not a figure in docs/performance.md. The scripts are imported as `python bench/X.py`
runs them (bench/ and the repository on sys.path, no arguments), without running their main part.
Some build a small model at import (a second or two); none trains or attacks.
"""

from __future__ import annotations

import builtins
import dis
import importlib
import os
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

BENCH = REPO / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py"))


@pytest.fixture
def bench_import(monkeypatch, tmp_path):
    """Import a bench/ script by name as `python bench/NAME.py` would, then forget it and what it set."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [str(BENCH / "script.py")])  # no arguments: each script's defaults
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # folders a script makes at import land here
    environment, before, generator = dict(os.environ), set(sys.modules), torch.random.get_rng_state()
    yield importlib.import_module
    torch.random.set_rng_state(generator)  # some scripts seed torch at import
    for name in set(sys.modules) - before:  # bench's modules have top-level names (_timing, pgd_cost, ...)
        if str(getattr(sys.modules[name], "__file__", "") or "").startswith(str(BENCH)):
            del sys.modules[name]
    os.environ.clear()
    os.environ.update(environment)


def test_every_script_is_checked():
    assert len(SCRIPTS) >= 15 and "fgsm_sweep" in SCRIPTS and "_timing" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_bench_script_imports_and_every_name_it_uses_exists(name, bench_import):
    module = bench_import(name)
    assert Path(module.__file__).resolve() == BENCH / f"{name}.py"
    missing = sorted(set(_missing_names(module)))
    assert not missing, f"bench/{name}.py uses names that no longer exist: {', '.join(missing)}"


def _missing_names(module: types.ModuleType):
    """Globals read by the module's functions that it does not define, and attributes of imported
    modules (``runner.RunConfig``, ``robench.attack.gradient``) that those modules lack."""
    namespace, codes = vars(module), list(_code_objects(module))
    # names the module assigns where importing did not run them (under `if __name__ == "__main__":`)
    assigned = {i.argval for code in codes for i in dis.get_instructions(code) if i.opname in ("STORE_NAME", "STORE_GLOBAL")}
    for code in codes:
        instructions = list(dis.get_instructions(code))
        for index, instruction in enumerate(instructions):
            if instruction.opname not in ("LOAD_GLOBAL", "LOAD_NAME"):
                continue
            name = instruction.argval
            if name not in namespace and name not in assigned and not hasattr(builtins, name):
                yield name
                continue
            value = namespace.get(name)
            for following in instructions[index + 1:]:  # a dotted chain of module attributes
                if not isinstance(value, types.ModuleType) or following.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
                    break
                if not hasattr(value, following.argval):
                    yield f"{value.__name__}.{following.argval}"
                    break
                value = getattr(value, following.argval)


def _code_objects(module: types.ModuleType):
    """The module's own code (its functions, classes, lambdas and comprehensions, nested), compiled
    from its file: what runs under ``if __name__ == "__main__":`` is included."""
    path = Path(module.__file__)
    pending = [compile(path.read_text(), str(path), "exec")]
    while pending:
        code = pending.pop()
        yield code
        pending.extend(const for const in code.co_consts if isinstance(const, types.CodeType))
