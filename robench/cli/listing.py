"""`robench list` from a cache of what the installed plugins said about themselves.

Why: listing the plugins means importing them, and every plugin module imports torch and its
model code: 6 s on an idle laptop for a screen of text that changes only when a plugin does. The
listing is kept per fingerprint of what it depends on (each entry point, the version of the
package that provides it, the size and modification time of the files of its module and of
robench's own, ROBENCH_DISABLE_PLUGINS, the Python version), read from the entry-point metadata
without importing any plugin; a changed or added plugin gives a new fingerprint, which is listed
the slow way once and kept. The cache lives beside the decoded images ($ROBENCH_CACHE_DIR, else the
per-user cache), in a folder only its owner can write; a folder others can write is not read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from importlib.util import find_spec
from pathlib import Path

GROUP = "robench"  # robench.pipeline.registry.ENTRY_POINT_GROUP, not imported: that module imports torch


def cached_listing(kinds: list[str], describe: Callable[[], dict]) -> dict:
    """``{"kinds": {kind: [lines]}, "failures": [lines]}`` for every kind, from the cache when its
    fingerprint matches, else from ``describe()`` (which loads the plugins), then kept. Where the
    registry is loaded already (a notebook, a test that installs a plugin) it answers at no cost."""
    if "robench.pipeline.registry" in sys.modules:
        return describe()
    path = _cache_file()
    found = _read(path)
    if found is not None and isinstance(found.get("kinds"), dict) and set(found["kinds"]) >= set(kinds):
        return found
    listing = describe()  # none, or damaged: listed anew and written again
    if path is not None:
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps(listing))
            os.replace(partial, path)
        except OSError:
            pass  # a read-only cache costs only the next listing's time
    return listing


def known_names() -> dict[str, list[str]] | None:
    """The installed plugins' names by kind, from a listing already cached for this fingerprint; None
    when none is (or some plugin failed to load): then the full path answers, after importing them."""
    found = _read(_cache_file())
    try:
        return None if not found or found["failures"] else found["names"]
    except (KeyError, TypeError):
        return None


PLURALS = {"strategy": "strategies", "attack": "attacks", "defense": "defenses", "dataset": "datasets"}  # as the registry words them


def refuse_unknown(given: dict[str, str | None]) -> None:
    """Raise the registry's one line for a plugin name the cached listing lacks, before torch loads:
    ``given`` maps a kind to its flag's text (``"full,vpt_deep:prompts=5"``)."""
    from robench.errors import PluginError, did_you_mean

    if "robench.pipeline.registry" in sys.modules:  # loaded already (a notebook, a test): it answers at no cost
        return
    names = known_names()
    if names is None:
        return
    for kind, text in given.items():
        for spec in (text or "").split(","):
            name = spec.split(":", 1)[0].strip()
            valid = names.get(kind, []) + (["none"] if kind == "defense" else [])
            if name and kind in names and name not in valid:
                raise PluginError(f"unknown {kind} {name!r}: {did_you_mean(name, names[kind])}valid {PLURALS[kind]}: "
                                  f"{', '.join(names[kind])}")


def _cache_file() -> Path | None:
    """Where the listing of this fingerprint is kept, or None where the cache folder may not be trusted."""
    folder = _folder()
    return folder / f"plugins-{fingerprint()}.json" if folder is not None else None


def _read(path: Path | None) -> dict | None:
    """The cached listing at ``path``, or None when there is none or it is not a JSON object."""
    try:
        found = json.loads(path.read_text()) if path is not None and path.is_file() else None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def fingerprint() -> str:
    """A hash of everything the listing depends on, read without importing a plugin."""
    digest = hashlib.sha256(f"{sys.version_info[:2]} {os.environ.get('ROBENCH_DISABLE_PLUGINS', '')}\n".encode())
    for ep in sorted(entry_points(group=GROUP), key=lambda e: (e.name, e.value)):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
        digest.update(f"{ep.name}={ep.value} {dist} {_files_state(ep.module)}\n".encode())
    digest.update(_tree_state(Path(__file__).resolve().parents[1]).encode())  # robench's own code (an editable install)
    return digest.hexdigest()[:24]


def _files_state(module: str) -> str:
    """Size and mtime of the files of the module's folder: a plugin edited in place lists anew."""
    try:
        spec = find_spec(module)  # imports the parent packages only, not the module
    except (ImportError, ValueError):
        return "missing"
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return "none"
    return _tree_state(Path(spec.origin).parent)


def _tree_state(folder: Path) -> str:
    entries = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".py"):
                found = os.stat(os.path.join(root, name))
                entries.append(f"{os.path.join(root, name)}:{found.st_size}:{found.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _folder() -> Path | None:
    """The cache folder, or None where it may not be trusted (another user owns it, or others can write to it)."""
    root = os.environ.get("ROBENCH_CACHE_DIR")
    if not root:
        import platformdirs  # what pooch.os_cache uses, without importing pooch

        root = platformdirs.user_cache_dir("robench")
    folder = Path(root) / "plugins"
    try:
        found = folder.stat()
    except OSError:
        return folder
    if (hasattr(os, "getuid") and found.st_uid != os.getuid()) or found.st_mode & 0o022:
        return None
    return folder
