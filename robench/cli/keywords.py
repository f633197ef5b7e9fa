"""robench.run's keyword arguments as the flags of `robench run`, so that both are one path.

``attack_samples=50`` is ``--attack-samples 50``; a list is the comma-separated text of the flag
(``seeds=[0, 1]``, ``strategies=["full", "vpt_deep:prompts=5"]``); ``True`` turns a switch on; a
plugin object (or class) is written as its spec (``VptDeep(prompts=5)`` -> ``vpt_deep:prompts=5``).
The flags then go through the command's own parser and checks (robench.cli.run_command), and the command
recorded in config.json is one a reader can type.
"""

from __future__ import annotations

import argparse

from robench.cli.parser import _run_parser, build_parser
from robench.errors import RobenchError, did_you_mean
from robench.pipeline.registry import load_registry

SPEC_KINDS = {"strategies": "strategy", "attacks": "attack", "defenses": "defense", "dataset": "dataset"}


def to_argv(options: dict) -> list[str]:
    """``robench run``'s argv for robench.run's keyword arguments; a name it lacks is refused in one line."""
    actions = {a.dest: a for a in _run_parser()._actions if a.option_strings and a.dest != "help"}
    argv = ["run"]
    for key, value in options.items():
        action = actions.get(key)
        if action is None:
            raise RobenchError(f"robench.run() has no option {key!r}: {did_you_mean(key, actions, n=1)}its options are the flags of `robench run` "
                               f"with _ for -: {', '.join(sorted(actions))}")
        flag = action.option_strings[-1]
        if action.nargs == 0:  # a switch such as --quiet
            if not isinstance(value, bool):
                raise RobenchError(f"robench.run(): {key} is a switch: pass True or False, not {value!r}")
            argv += [flag] if value else []
        elif value is not None:
            argv.append(f"{flag}={_flag_text(key, value)}")
    return argv


def parse(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed as the command line is, with argparse's complaint raised as one line instead of an exit."""
    parser = build_parser()

    def refuse(message: str):
        raise RobenchError(f"robench.run(): {message} (keyword arguments are the flags of `robench run --help`)")

    parser.error = _run_parser(parser).error = refuse
    return parser.parse_args(argv)


def _flag_text(key: str, value) -> str:
    kind = SPEC_KINDS.get(key)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    texts = [spec_text(item, kind) if kind else _scalar(item) for item in items]
    if len(texts) > 1 and any("," in text for text in texts):
        raise RobenchError(f"robench.run(): an item of {key} holds a comma, which separates items: {value!r}")
    return ",".join(texts)


def _scalar(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def spec_text(plugin, kind: str) -> str:
    """The spec of a plugin given as text, as a class, or as an object whose options it reads back
    from the attributes its ``__init__`` stored (as the built-ins do: ``self.prompts = prompts``)."""
    if isinstance(plugin, str):
        return plugin
    factory = plugin if isinstance(plugin, type) else type(plugin)
    name = getattr(factory, "name", None)
    if not isinstance(name, str):
        raise RobenchError(f"robench.run(): {plugin!r} is not a {kind}: pass a name such as "
                           f"{load_registry().names(kind)[0]!r} or an object of an installed {kind} plugin")
    registered = load_registry().get(kind, name)
    if registered.factory is not factory:
        raise RobenchError(f"robench.run(): {factory.__module__}.{factory.__qualname__} is not the installed {kind} {name!r} "
                           f"({registered.factory.__module__}.{registered.factory.__qualname__}): install yours as a plugin "
                           "(docs/writing-plugins.md), which gives it a name and version its results are kept under")
    if plugin is factory:
        return name
    options = []
    for key, param in registered.options().items():
        if not hasattr(plugin, key):
            raise RobenchError(f"robench.run(): cannot read option {key!r} back from the {kind} object {plugin!r}: "
                               f"pass it as text instead, e.g. '{name}:{key}=VALUE'")
        value = getattr(plugin, key)
        if not _same(value, param.default):
            options.append(f"{key}={_option_text(value)}")
    return ":".join([name, *options])


def _same(value, default) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return value == default and isinstance(value, bool) == isinstance(default, bool)


def _option_text(value) -> str:
    """An option's value as a spec writes it: lists joined by +, true/false, none, floats exact."""
    if isinstance(value, (list, tuple)):
        return "+".join(_option_text(item) for item in value)
    text = str(value).lower() if isinstance(value, bool) or value is None else _scalar(value)
    if not isinstance(value, (bool, int, float, str, type(None))) or any(c in text for c in ",:+="):
        raise RobenchError(f"robench.run(): cannot write the option value {value!r} in a spec: "
                           "pass it as text instead, e.g. 'NAME:KEY=VALUE'")
    return text
