"""Command-line specs of plugins: ``name:key=value:key=value``, checked against the plugin.

Options are the keyword arguments of a plugin's constructor, typed by their annotations (or
their defaults), so a plugin declares its options once, in its signature, as timm's models do.
Lists use ``+``: ``lora:targets=qkv+proj``. Floats accept fractions: ``pgd:alpha=1/255``.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field

from robench.errors import PluginError, did_you_mean, one_line
from robench.pipeline.registry import PLURALS, Plugin, Registry

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Spec:
    """One plugin as asked for on the command line, with its options still as text."""

    text: str
    name: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the spec is named in results and leaderboards: ``vpt_deep(prompts=5, lr=0.5)``."""
        if not self.options:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.options.items())})"


def parse_specs(text: str, what: str) -> list[Spec]:
    """Split ``"full,vpt_deep:prompts=5"`` into specs; an empty list is an error."""
    specs = [parse_spec(part.strip(), what) for part in text.split(",") if part.strip()]
    if not specs:
        raise PluginError(f"no {what} given: name at least one, e.g. --{PLURALS[what]} NAME")
    return specs


def parse_spec(text: str, what: str) -> Spec:
    name, *pairs = text.split(":")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise PluginError(f"malformed {what} option {pair!r} in {text!r}: write it as {name}:KEY=VALUE")
        if key in options:
            raise PluginError(f"option {key!r} given twice in {text!r}")
        options[key] = value
    return Spec(text, name, options)


def build(plugin: Plugin, options: dict[str, str], spec_text: str, reserved: typing.Collection[str] = ()):
    """Instantiate a plugin from text options, with one clear line for any bad option (``reserved``:
    the other keys its spec may hold, e.g. a strategy's recipe fields, named in that line too)."""
    accepted = plugin.options()
    hints = typing.get_type_hints(plugin.factory.__init__)
    kwargs = {}
    for key, text in options.items():
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            others = [name for name in reserved if name not in accepted]
            valid += f"; recipe fields: {', '.join(others)}" if others else ""
            raise PluginError(f"unknown option {key!r} for {plugin.kind} {plugin.name!r} in {spec_text!r}: "
                              f"{did_you_mean(key, [*accepted, *others])}valid options: {valid}")
        kwargs[key] = coerce(text, hints.get(key) or _type_of_default(accepted[key]), f"{spec_text!r}: option {key}")
    try:
        return plugin.factory(**kwargs)
    except (ValueError, TypeError) as exc:
        raise PluginError(f"invalid {plugin.kind} {spec_text!r}: {exc}") from None
    except PluginError:
        raise
    except Exception as exc:  # noqa: BLE001  (a plugin's bug is reported as its package's, in one line)
        raise PluginError(f"{plugin.kind} {plugin.name!r} from package {plugin.package!r} failed to start "
                          f"({one_line(exc)}): "
                          f"report it to that package, or use another {plugin.kind}") from None


def resolve(registry: Registry, kind: str, spec: Spec, reserved: typing.Collection[str] = ()):
    """Split reserved keys (e.g. training recipe overrides) off a spec and build the plugin.

    Returns ``(instance, reserved_options_as_text)``.
    """
    plugin = registry.get(kind, spec.name)
    own = {k: v for k, v in spec.options.items() if k not in reserved or k in plugin.options()}
    rest = {k: v for k, v in spec.options.items() if k not in own}
    return build(plugin, own, spec.text, reserved), rest


def coerce(text: str, annotation, where: str):
    """Convert option text to the annotated type; raise PluginError saying what was expected."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and args:
        if text.lower() == "none":
            return None
        return coerce(text, args[0], where)
    if origin in (tuple, list):
        items = tuple(coerce(t, args[0] if args else str, where) for t in text.split("+"))
        return items if origin is tuple else list(items)
    try:
        if annotation is bool:
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            num, sep, den = text.partition("/")
            return float(num) / float(den) if sep else float(text)
    except (ValueError, ZeroDivisionError):
        kind = {bool: "true or false", int: "a whole number", float: "a number"}[annotation]
        raise PluginError(f"{where}: expected {kind}, got {text!r}") from None
    return text


def _type_of_default(param: inspect.Parameter) -> type:
    default = param.default
    return str if default is None or default is inspect.Parameter.empty else type(default)
