"""robench from Python: run a benchmark, read a run back, list the plugins; no command line needed.

``run`` takes the options of ``robench run`` as keyword arguments and goes through the same parser
and checks as the command (robench.cli.keywords, robench.cli.run_command), so that the two never drift apart.
Both ``run`` and ``load_run`` hand back a :class:`Results`, read from the run folder: what a run
wrote is what a notebook sees, however the run was made. docs/python-api.md shows them at work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from robench.cli import keywords
from robench.cli import run_command as cli_run
from robench.core import results
from robench.errors import RobenchError
from robench.pipeline import runner
from robench.pipeline.registry import KINDS, load_registry
from robench.report.leaderboard import LEADERBOARD_FILE


@dataclass(frozen=True, eq=False)
class Results:
    """A run's results, read from its folder (each table once, when first asked for)."""

    run_dir: Path
    leaderboard: Path | None  # the page: where it was published, else the run folder's copy

    @cached_property
    def config(self) -> dict:
        """config.json: the command, versions, data, split, weights and settings of the run."""
        return results.read_config(self.run_dir)

    @cached_property
    def rows(self) -> pd.DataFrame:
        """One row per (strategy, seed, attack, eps) cell, its latest version, as results.jsonl has it
        but without the per-image lists (those are ``records``); docs/protocol.md defines the columns."""
        return results.read_frame(self.run_dir).drop(columns=list(results.RECORD_FIELDS))

    @cached_property
    def records(self) -> pd.DataFrame:
        """One row per (strategy, seed, attack, eps, attacked image): its label and predictions."""
        return results.read_records(self.run_dir)

    @property
    def failed(self) -> pd.DataFrame:
        """The cells that failed, with their one-line error; empty when all went well."""
        return self.rows[self.rows["status"] != "ok"]

    def __repr__(self) -> str:
        return f"Results({str(self.run_dir)!r}: {len(self.rows)} cells, {len(self.failed)} failed)"


def run(**options) -> Results:
    """Run a benchmark, as ``robench run`` does with the same options: ``robench.run(dataset="synthetic",
    strategies="full,linear_probe", attacks=["fgsm", "pgd:steps=5"], eps=[0.01, 0.02], seeds=[0, 1])``.

    A strategy, attack, defense or dataset is a spec (``"vpt_deep:prompts=5"``) or an object or class
    of an installed plugin. A run folder (``out``, default ``runs/<name>``) that holds an earlier run
    of the same settings is resumed. Failed cells do not raise: they are in ``Results.failed``.
    Bad input raises robench.errors.RobenchError with one line saying what to change.
    """
    argv = keywords.to_argv(options)
    config = cli_run.config_from_args(keywords.parse(argv), argv)
    leaderboard, _ = runner.run(config)
    return Results(config.out, leaderboard)


def load_run(run_dir: str | Path) -> Results:
    """The results of a finished (or interrupted) run, from its folder: the ``out`` of ``run``."""
    if not isinstance(run_dir, str | os.PathLike):
        raise RobenchError(f"robench.load_run() takes a run folder (a path or a string), not {type(run_dir).__name__} "
                           f"{run_dir!r}: pass the out of robench.run, e.g. load_run('runs/my-run')")
    run_dir = results.run_folder(run_dir)
    page = run_dir / LEADERBOARD_FILE
    return Results(run_dir, page if page.is_file() else None)


def list_plugins(kind: str | None = None) -> pd.DataFrame:
    """Every installed strategy, attack, defense, dataset and backbone provider (or those of one
    ``kind``): its name, what it does, its options with their defaults, and the package it comes from."""
    if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
        raise RobenchError(f"unknown plugin kind {kind!r}: use one of {', '.join(KINDS)}")
    rows = [{"kind": plugin.kind, "name": plugin.name, "description": plugin.description,
             "options": {name: None if p.default is p.empty else p.default for name, p in plugin.options().items()},
             "package": plugin.package, "version": plugin.version} for plugin in load_registry().all(kind)]
    return pd.DataFrame(rows, columns=["kind", "name", "description", "options", "package", "version"])
