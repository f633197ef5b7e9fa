"""Finds plugins through the "robench" entry-point group and indexes what they register.

Built-in plugins (``plugins/``) are entry points of the robench distribution itself, so they
are found and loaded by the same code as a third party's. Set ``ROBENCH_DISABLE_PLUGINS`` to a
comma-separated list of entry-point names to keep some from loading (like pytest's ``-p no:``).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, entry_points, version

import pluggy

from robench import hookspecs
from robench.attack import check_attack_class
from robench.errors import PluginError, did_you_mean

ENTRY_POINT_GROUP = "robench"
KINDS = {"strategy": "register_strategies", "attack": "register_attacks", "defense": "register_defenses",
         "dataset": "register_datasets", "backbone": "register_backbones"}
PLURALS = {"strategy": "strategies", "attack": "attacks", "defense": "defenses", "dataset": "datasets", "backbone": "backbones"}


@dataclass(frozen=True)
class Plugin:
    """One registered strategy, attack, defense, dataset or backbone provider and where it came from."""

    name: str
    kind: str
    factory: type
    package: str  # the distribution that provides it, e.g. "robench" or "robench-foo"

    @property
    def version(self) -> str:
        """The providing distribution's version: recorded with every run and part of its checkpoints' keys."""
        try:
            return version(self.package)
        except PackageNotFoundError:
            return "unknown"

    def provenance(self) -> dict:
        return {"kind": self.kind, "name": self.name, "package": self.package, "version": self.version}

    @property
    def description(self) -> str:
        doc = self.factory.description or inspect.getdoc(self.factory) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def options(self) -> dict[str, inspect.Parameter]:
        """The keyword options the factory takes, with their defaults."""
        params = inspect.signature(self.factory).parameters
        return {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}


class DuplicateName(PluginError):
    """Two packages register one name: refused outright, not recorded as one plugin's failure."""


@dataclass(frozen=True)
class LoadFailure:
    entry_point: str
    package: str
    error: str


class Registry:
    """Every plugin the installed packages register, by kind and name."""

    def __init__(self, plugin_manager: pluggy.PluginManager, packages: dict[str, str], failures=()):
        self._plugins: dict[str, dict[str, Plugin]] = {kind: {} for kind in KINDS}
        failed = list(failures)
        for kind, hook_name in KINDS.items():
            for impl in getattr(plugin_manager.hook, hook_name).get_hookimpls():
                package = packages.get(impl.plugin_name, impl.plugin_name)
                try:
                    impl.function(register=lambda factory, k=kind, p=package: self._add(k, factory, p))
                except DuplicateName:
                    raise  # which of the two a name would mean is not robench's guess to make
                except Exception as exc:  # noqa: BLE001  (one plugin's broken hook must not hide the others)
                    entry_point = impl.plugin_name.split(":", 1)[-1]
                    failed.append(LoadFailure(entry_point, package, f"{type(exc).__name__}: {exc}".splitlines()[0]))
        self.failures = tuple(failed)

    def _add(self, kind: str, factory: type, package: str) -> None:
        name = getattr(factory, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"package {package!r} registered a {kind} without a `name` attribute: {factory!r}")
        if kind == "attack":
            check_attack_class(factory)  # family and norm are required: refused in one line naming them
        existing = self._plugins[kind].get(name)
        if existing is not None:
            raise DuplicateName(
                f"two plugins register the {kind} {name!r}: packages {existing.package!r} and {package!r}; "
                f"uninstall one or disable it with ROBENCH_DISABLE_PLUGINS"
            )
        self._plugins[kind][name] = Plugin(name, kind, factory, package)

    def all(self, kind: str | None = None) -> list[Plugin]:
        kinds = [kind] if kind else list(KINDS)
        return [p for k in kinds for _, p in sorted(self._plugins[k].items())]

    def names(self, kind: str) -> list[str]:
        return sorted(self._plugins[kind])

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin called ``name``, or a PluginError listing valid names and close matches."""
        plugin = self._plugins[kind].get(name)
        if plugin is not None:
            return plugin
        valid = self.names(kind)
        broken = "".join(f"; plugin {f.package!r} failed to load ({f.error})" for f in self.failures)
        raise PluginError(f"unknown {kind} {name!r}: {did_you_mean(name, valid)}valid {PLURALS[kind]}: {', '.join(valid)}{broken}")


def load_registry() -> Registry:
    """Load every installed, enabled plugin and build the registry (cached per process)."""
    return _load_registry(os.environ.get("ROBENCH_DISABLE_PLUGINS", ""))


@cache
def _load_registry(disabled: str) -> Registry:
    blocked = {name.strip() for name in disabled.split(",") if name.strip()}
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    packages, failures = {}, []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist is not None else ep.value
        plugin_name = f"{package}:{ep.name}"
        if ep.name in blocked or manager.get_plugin(plugin_name) is not None:
            continue
        try:
            manager.register(ep.load(), name=plugin_name)
        except Exception as exc:  # a broken plugin must not take the others down
            failures.append(LoadFailure(ep.name, package, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            continue
        packages[plugin_name] = package
    return Registry(manager, packages, failures)
