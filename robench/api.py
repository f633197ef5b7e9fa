"""robench from Python: run a benchmark, read a run back, list the plugins; no command line needed.

``run`` takes the options of ``robench run`` as keyword arguments and goes through the same parser
and checks as the command (robench.cli.keywords, robench.cli.run_command), so that the two never drift apart.
Both ``run`` and ``load_run`` hand back a :class:`Results`, read from the run folder: what a run
wrote is what a notebook sees, however the run was made. docs/python-api.md shows them at work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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
from robench.report import export
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

    @cached_property
    def table(self) -> pd.DataFrame:
        """The page's numbers, one row per (strategy, attack, eps), the worst case included: clean and
        balanced accuracy, robust accuracy with its 95% interval, the rank (what ``--format csv`` writes)."""
        return export.table(self.run_dir)

    @property
    def failed(self) -> pd.DataFrame:
        """The cells that failed, with their one-line error; empty when all went well."""
        return self.rows[self.rows["status"] != "ok"]

    def __repr__(self) -> str:
        return f"Results({str(self.run_dir)!r}: {len(self.rows)} cells, {len(self.failed)} failed)"


Spec = str | object  # "vpt_deep:prompts=5", or an installed plugin's object or class
Specs = Spec | Sequence[Spec]  # one, a comma-separated string, or a list
Numbers = float | str | Sequence[float | str]  # eps as numbers in [0, 1] or "k/255"


def run(*, config: str | Path | None = None, preset: str | None = None, dataset: Spec | None = None,
        data_dir: str | Path | None = None, subset: int | None = None, split_seed: int | None = None,
        test_set: str | None = None, test_dir: str | Path | None = None, backbone: str | None = None,
        weights: str | Path | None = None, image_size: int | None = None, strategies: Specs | None = None,
        defenses: Specs | None = None, attacks: Specs | None = None, eps: Numbers | None = None,
        seeds: int | Sequence[int] | None = None, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, attack_batch_size: int | None = None, attack_samples: int | None = None,
        escalation: int | str | None = None, tune: str | Sequence[str] | None = None, tune_budget: str | None = None,
        protocol: str | None = None, device: str | None = None, train_precision: str | None = None,
        attack_precision: str | None = None, channels_last: bool = False, compile: bool = False,
        executor: str | None = None, ray_address: str | None = None, ray_gpus_per_task: float | None = None,
        out: str | Path | None = None, name: str | None = None, leaderboard_dir: str | Path | None = None,
        force: bool = False, format: str | Sequence[str] | None = None, reference: str | None = None,
        quiet: bool = False, log_json: str | Path | None = None, threads: int | None = None) -> Results:
    """Run a benchmark, as ``robench run`` does with the same options: ``robench.run(dataset="synthetic",
    strategies="full,linear_probe", attacks=["fgsm", "pgd:steps=5"], eps=[0.01, 0.02], seeds=[0, 1])``.

    Every keyword is a flag of ``robench run --help`` with ``_`` for ``-`` and means what the flag
    means; None (the default) leaves the command's default. The main ones:

    - ``dataset``, ``data_dir``: the images (``"ham10000"`` in a folder, ``"synthetic"`` offline, ``"folder"``);
    - ``backbone``, ``weights``, ``image_size``: the pretrained model (any timm name, a local weights file);
    - ``strategies``, ``attacks``, ``defenses``: specs with options, ``"vpt_deep:prompts=5"``, or objects or
      classes of installed plugins; ``eps`` in [0, 1] or ``"k/255"``; ``seeds``;
    - ``tune``, ``tune_budget``: search each strategy's recipe on the validation split (docs/tuning.md);
    - ``out``: the run folder (default ``runs/<name>``); one holding an earlier run of the same settings is resumed.

    Failed cells do not raise: they are in ``Results.failed``. Bad input raises
    robench.errors.RobenchError with one line saying what to change.
    """
    given = {key: value for key, value in locals().items() if value is not None and value is not False}
    argv = keywords.to_argv(given)
    parsed = cli_run.config_from_args(keywords.parse(argv), argv)
    leaderboard, _ = runner.run(parsed)
    return Results(parsed.out, leaderboard)


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
