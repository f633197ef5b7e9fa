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
        seeds: int | Sequence[int] | None = None, corruptions: str | Sequence[str] | None = None,
        severities: int | Sequence[int] | None = None, epochs: int | None = None, batch_size: int | None = None,
        lr: float | None = None, attack_batch_size: int | None = None, attack_samples: int | None = None,
        escalation: int | str | None = None, tune: str | Sequence[str] | None = None, tune_budget: str | None = None,
        protocol: str | None = None, device: str | None = None, train_precision: str | None = None,
        attack_precision: str | None = None, channels_last: bool = False, compile: bool = False,
        executor: str | None = None, ray_address: str | None = None, ray_gpus_per_task: float | None = None,
        out: str | Path | None = None, name: str | None = None, leaderboard_dir: str | Path | None = None,
        force: bool = False, format: str | Sequence[str] | None = None, reference: str | None = None,
        quiet: bool = False, log_json: str | Path | None = None, threads: int | None = None,
        model: str | Path | None = None, track: str | None = None) -> Results:
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
    - ``model``: a checkpoint of ``backbone`` trained elsewhere, attacked instead of training (``robench eval``);
      for a model object, use :func:`benchmark`.
    - ``track="mlflow"``: also log the finished run to MLflow (robench.report.mlflow_tracking).

    Failed cells do not raise: they are in ``Results.failed``. Bad input raises
    robench.errors.RobenchError with one line saying what to change.
    """
    given = {key: value for key, value in locals().items() if value is not None and value is not False}
    argv = keywords.to_argv(given)
    parsed = cli_run.config_from_args(keywords.parse(argv), argv)
    leaderboard, _ = runner.run(parsed)
    return Results(parsed.out, leaderboard)


# What robench.benchmark sets itself: the model it is given is the backbone, and nothing trains.
_SET_BY_BENCHMARK = ("backbone", "weights", "strategies", "defenses", "tune", "tune_budget", "epochs", "lr", "batch_size",
                     "model")
MODEL_FILE = "benchmarked-model.pt"


def benchmark(model, *, dataset: Spec, attacks: Specs, eps: Numbers, seeds: int | Sequence[int] = (0,),
              data_dir: str | Path | None = None, image_size: int | None = None, out: str | Path | None = None,
              name: str | None = None, **options) -> pd.DataFrame:
    """Attack a model trained elsewhere as robench attacks its own: ``robench.benchmark(model,
    dataset="ham10000", data_dir="data/ham10000", image_size=224, attacks="fgsm,pgd", eps=["1/255", "2/255"])``.

    ``model``: any ``torch.nn.Module`` that maps N x 3 x S x S images in [0, 1] to N x classes logits,
    normalising inside, with the dataset's classes in the dataset's order (one that answers another
    number of classes is refused in one line). It is evaluated on the dataset's test split with the
    same attacks, worst case, escalation, intervals and per-image records as a trained strategy
    (the ``given`` strategy on the ``module`` backbone provider; nothing trains); ``seeds`` draw the
    attacks' random starts. ``options``: any other keyword of :func:`run` (``attack_samples``,
    ``test_set``, ``leaderboard_dir`` for a page, ``quiet``, ...). The model is saved in ``out`` as
    benchmarked-model.pt (its sha256 names it on the page), so its class must be importable there.

    Returns the rows, one per (seed, attack, eps) cell with ``robust_acc``, as :attr:`Results.rows`
    does; ``rows.attrs["run_dir"]`` is the run folder (``robench.load_run`` of it: the page, the table with
    intervals, the per-image records) and ``rows.attrs["leaderboard"]`` the page.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise RobenchError(f"robench.benchmark() takes a torch.nn.Module, not {type(model).__name__}: pass the model "
                           "itself (for a checkpoint file, use robench eval --model FILE --backbone NAME)")
    if taken := sorted(set(options) & set(_SET_BY_BENCHMARK)):
        raise RobenchError(f"robench.benchmark() sets {', '.join(taken)} itself (the model is given and nothing trains): "
                           "drop them, or use robench.run to train models")
    label = type(model).__name__
    name = name or f"benchmark-{label.lower()}"
    out = Path(out) if out is not None else Path("runs") / name
    out.mkdir(parents=True, exist_ok=True)
    file = out / MODEL_FILE
    if not _holds(file, model):  # torch.save writes a random id in each file: the same model is not saved twice
        torch.save(model, file)
    found = run(dataset=dataset, data_dir=data_dir, image_size=image_size, attacks=attacks, eps=eps, seeds=seeds,
                backbone=f"module:{label}", weights=file, strategies="given", out=out, name=name, **options)
    rows = found.rows.copy()
    rows.attrs = {"run_dir": str(found.run_dir), "leaderboard": str(found.leaderboard) if found.leaderboard else None}
    return rows


def _holds(file: Path, model) -> bool:
    """Whether ``file`` already holds ``model`` (its class and every tensor of its state), so that
    benchmarking the same model again resumes its run instead of meeting another file hash."""
    import torch

    if not file.is_file():
        return False
    try:
        saved = torch.load(file, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001  (whatever is there is replaced)
        return False
    if type(saved) is not type(model):
        return False
    ours, theirs = model.state_dict(), saved.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[k].cpu(), theirs[k]) for k in ours)


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
