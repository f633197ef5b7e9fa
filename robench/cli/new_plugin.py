"""`robench new KIND NAME`: a pip-installable plugin package to start from.

A strategy, attack or defense of one's own is a small Python package with one entry point
(docs/writing-plugins.md). Writing that package by hand means getting the entry-point table, the
hook and the contract right before the first run; the templates (robench/cli/templates) are a
working plugin of each kind, with its contract test, that installs and runs as written, so that
a user edits one method instead of assembling the parts. Imports no torch: it only writes text.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

from robench.errors import RobenchError

TEMPLATES = Path(__file__).with_name("templates")
NEW_KINDS = ("strategy", "attack", "defense")
TRY_IT = {
    "strategy": "robench run --dataset synthetic --strategies linear_probe,$name --attacks fgsm",
    "attack": "robench run --dataset synthetic --strategies linear_probe --attacks fgsm,$name",
    "defense": "robench run --dataset synthetic --strategies linear_probe --defenses none,$name --attacks fgsm",
}


def try_it(kind: str, name: str) -> str:
    """The command that runs a new plugin of ``kind`` called ``name`` beside a built-in."""
    return Template(TRY_IT[kind]).substitute(name=name)


def new_plugin(kind: str, name: str, parent: Path, taken: dict[str, list[str]] | None = None) -> Path:
    """Write the package ``robench-NAME`` for a plugin of ``kind`` called ``name`` into ``parent``
    and return its folder. ``taken``: the names each kind already has (a clash is refused)."""
    if kind not in NEW_KINDS:
        raise RobenchError(f"robench new makes a {', '.join(NEW_KINDS[:-1])} or {NEW_KINDS[-1]}, not {kind!r}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise RobenchError(f"plugin name {name!r}: use lowercase letters, digits and _, starting with a letter "
                           "(it is the name on the command line and part of a Python package name)")
    if name in (taken or {}).get(kind, []):
        article = "an" if kind[0] in "aeiou" else "a"
        raise RobenchError(f"{article} {kind} named {name!r} is installed already (robench list --kind {kind}): choose another name")
    dist = "robench-" + name.replace("_", "-")
    folder = parent / dist
    if folder.exists():
        raise RobenchError(f"{folder} exists already: remove it or give another --dir")
    values = {"name": name, "kind": kind, "dist": dist, "package": "robench_" + name,
              "cls": "".join(part.capitalize() for part in name.split("_"))}
    values["try_it"] = try_it(kind, name)
    files = {"pyproject.toml": "pyproject.toml.tmpl", "README.md": "README.md.tmpl",
             f"{values['package']}/__init__.py": f"{kind}.py.tmpl", f"tests/test_{name}.py": f"test_{kind}.py.tmpl"}
    for target, template in files.items():
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    return folder
