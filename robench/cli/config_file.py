"""Run settings from a TOML file (``robench run --config FILE``) or a preset shipped with robench
(``robench run --preset NAME``, files in ``robench/cli/presets/``).

A file's keys are the ``robench run`` flags, spelled as in Python (``data_dir``, ``batch_size``;
``data-dir`` works too), so there is nothing new to learn and a new flag is a new key at once:
the keys and their types are read off the command's own argparse actions. Lists are TOML
lists (``strategies = ["full", "vpt_deep:prompts=5"]``, ``eps = [0.01, "2/255"]``) or the
flag's comma-separated text. Relative paths are relative to the current directory, as on the
command line. Every mistake is one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

from robench.errors import RobenchError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

PRESET_SUFFIX = ".toml"
# Flags whose text is a comma-separated list, and the TOML types their list items may have.
LIST_KEYS = {"strategies": (str,), "defenses": (str,), "attacks": (str,), "eps": (float, int, str), "seeds": (int,)}
NUMBER_OR_WORD = {"escalation"}  # a flag whose text is a whole number or a word (``3`` or ``off``): TOML's 3 is its text
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", Path: "a path (a string)"}


def read_file(path: Path) -> dict:
    """The table of a TOML file, or one line saying why it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobenchError(f"config file {path} not found: pass a TOML file (`robench presets` lists the shipped ones)") from None
    except OSError as exc:
        raise RobenchError(f"cannot read config file {path} ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
        raise RobenchError(f"config file {path} is not UTF-8 text (byte {exc.object[exc.start]:#x} at position "
                           f"{exc.start}): save it as UTF-8") from None
    return _parse(text, f"config file {path}")


def read_preset(name: str) -> dict:
    return _parse(preset_text(name), f"preset {name}")


def preset_text(name: str) -> str:
    """The TOML text of a shipped preset, or one line listing the presets there are."""
    found = presets()
    if name not in found:
        close = difflib.get_close_matches(name, found, n=2)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise RobenchError(f"unknown preset {name!r}: {hint}presets: {', '.join(found)} (see `robench presets`)")
    return found[name].read_text()


def presets() -> dict:
    """Shipped presets by name (file name without .toml), each a readable resource of the package."""
    folder = files("robench.cli") / "presets"
    entries = [entry for entry in folder.iterdir() if entry.name.endswith(PRESET_SUFFIX)]
    return {entry.name.removesuffix(PRESET_SUFFIX): entry for entry in sorted(entries, key=lambda e: e.name)}


def summary(text: str) -> str:
    """A preset's first comment line: what it runs."""
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def flag_values(table: Mapping, actions: Mapping[str, argparse.Action], source: str) -> dict:
    """Check a file's table against the flags (``actions`` by dest) and convert each value to what
    argparse would have made of the flag; keys keep the file's order."""
    values = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None:
            close = difflib.get_close_matches(dest, actions, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise RobenchError(f"{source}: unknown key {key!r}{hint}; valid keys: {', '.join(actions)}")
        values[dest] = _convert(value, dest, action, f"{source}: key {key!r}")
    return values


def _parse(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RobenchError(f"{source} is not valid TOML: {exc}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise RobenchError(f"{source} nests arrays or tables too deep to read: a run's settings are flat lists and "
                           "values; write them as in `robench presets NAME`") from None


def _convert(value, dest: str, action: argparse.Action, where: str):
    if dest in LIST_KEYS:
        return _list_text(value, LIST_KEYS[dest], where)
    if dest in NUMBER_OR_WORD and _is(value, int):
        return str(value)
    if action.nargs == 0:  # an on/off flag such as --quiet
        kind = bool
    else:
        kind = action.type if action.type in (int, float, Path) else str
    if not _is(value, kind):
        raise RobenchError(f"{where} must be {_TYPE_NAMES[kind]}, got {value!r}")
    if kind is Path and not value.strip():  # Path("") is the current folder: a run would fill it
        raise RobenchError(f"{where} is empty: name a folder, e.g. \"runs/my-run\"")
    value = Path(value).expanduser() if kind is Path else float(value) if kind is float else value
    if action.choices is not None and value not in action.choices:
        raise RobenchError(f"{where} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def _list_text(value, item_types: tuple, where: str) -> str:
    """A TOML list (or a single item, or the flag's comma-separated text) as the flag's text."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not any(_is(item, kind) for kind in item_types):
            kinds = " or ".join(_TYPE_NAMES[kind] for kind in item_types)
            raise RobenchError(f"{where} must be a list of items each {kinds}, got {item!r}")
    return ",".join(str(item) for item in items)


def _is(value, kind: type) -> bool:
    if isinstance(value, bool):  # TOML true is a Python int too
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind is Path:
        return isinstance(value, str)
    return isinstance(value, kind)
