"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""

import difflib
from collections.abc import Iterable


class RobenchError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class DataError(RobenchError):
    """The dataset is missing, incomplete or unreadable."""


class PluginError(RobenchError):
    """A plugin is unknown, misconfigured, clashes with another or failed to load."""


def import_optional(module: str, needed_for: str, install: str):
    """The optional package ``module`` (an extra such as open_clip or medmnist), or one line saying
    what needs it and how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RobenchError(f"{needed_for} needs the {module} package: {install}") from None


def did_you_mean(name: str, valid: Iterable[str], n: int = 3) -> str:
    """``"did you mean pgd? "`` for a mistyped name, else ``""``: the name in another case first
    (``PGD``), then names it begins (``vit_tiny`` -> ``vit_tiny_patch16_224``), then close spellings."""
    by_lower = {v.lower(): v for v in valid}
    typed = name.lower()
    found = [by_lower[typed]] if typed in by_lower else []
    if len(typed) >= 3:
        found += [v for low, v in by_lower.items() if low.startswith(typed)][:n]
    found += [by_lower[low] for low in difflib.get_close_matches(typed, by_lower, n=n)]
    found = list(dict.fromkeys(found))[:n]
    return f"did you mean {', '.join(found)}? " if found else ""


def one_line(exc: BaseException) -> str:
    """``"KeyError: 'x'"``: an exception as one short line, for messages that name a plugin's bug."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
