"""Progress bars (tqdm) that stay quiet when output is not a terminal or with --quiet."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_QUIET_ENV = "ROBENCH_QUIET"


def set_quiet(quiet: bool) -> None:
    os.environ[_QUIET_ENV] = "1" if quiet else ""


def quiet() -> bool:
    return bool(os.environ.get(_QUIET_ENV)) or not sys.stderr.isatty()


def progress(iterable, **kwargs):
    """``tqdm(iterable)`` with rate and ETA, or the bare iterable when quiet."""
    return tqdm(iterable, leave=False, dynamic_ncols=True, disable=quiet(), **kwargs)


def say(message: str) -> None:
    """One line for the user, unless --quiet."""
    if not os.environ.get(_QUIET_ENV):
        print(message, flush=True)
