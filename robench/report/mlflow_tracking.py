"""``--track mlflow``: a run's settings, numbers and page logged to MLflow, where researchers keep
their experiments. The run folder stays the record; MLflow gets a copy to search and compare.

One MLflow run per robench run (its settings as params; the page, config.json, results.jsonl,
plots and CSVs as artifacts) with one nested run per trained model (strategy, seed), whose metrics
are that model's clean numbers and every cell's, the worst case included: ``robust_acc/pgd/2_255``
is the robust accuracy under PGD at eps 2/255, ``clean_acc`` the clean accuracy, ``clean_ece`` its ECE. The store is the one
MLflow's own settings name (``MLFLOW_TRACKING_URI``, else MLflow's default), the experiment
``MLFLOW_EXPERIMENT_NAME`` or ``MLFLOW_EXPERIMENT_ID``, else "robench". Logging a run folder again
(a resumed or extended run) replaces its earlier MLflow runs, so the store holds each run once.

MLflow is not a dependency, nor an extra: every mlflow-skinny release since 2.13 needs requests
>= 2.28.1 (through databricks-sdk), which torchattacks 3.5.1 forbids (``requests ~= 2.25.1``) though
it never imports requests. ``pip install mlflow-skinny`` after robench works, with pip's warning
about that pin.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

from robench.attack import CLEAN
from robench.core.metrics import eps_label
from robench.core.results import CELL_METRICS, MODEL_METRICS, RESULTS_FILE, run_folder
from robench.errors import RobenchError

TRACKERS = ("mlflow",)
INSTALL = ("pip install mlflow-skinny (pip then warns that torchattacks pins requests~=2.25.1; "
           "torchattacks never imports requests)")
DEFAULT_EXPERIMENT = "robench"
RUN_TAG = "robench.run"  # the run folder's fingerprint: how a later logging of it finds the earlier one
SKIPPED_SETTINGS = ("attacked", "comparable")  # per-image ids, and a copy of the settings above them
MAX_PARAM = 500  # characters: the limit of older MLflow servers (newer take 6000); config.json has all
# A clean row's metrics, named as they are but ece and nll as clean_ece and clean_nll: in MLflow's file
# store a key is a file, and "ece" would be the folder of "ece/pgd/0.02" too.
CLEAN_NAMES = {"ece": "clean_ece", "nll": "clean_nll"}
MODEL_PARAMS = ("strategy", "strategy_name", "defense", "defense_name", "seed")


def check(tracker: str) -> None:
    """Refuse, in one line and before any training, a tracker robench lacks, MLflow missing, or a
    store MLflow cannot open: the run would otherwise find out after hours."""
    if tracker not in TRACKERS:
        raise RobenchError(f"--track {tracker!r} is not a tracker robench logs to: give one of {', '.join(TRACKERS)}")
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise RobenchError(f"--track mlflow needs MLflow, which is not installed: {INSTALL}") from None
    with _mlflow() as mlflow:
        _experiment(mlflow)


def track(run_dir: Path, tracker: str = "mlflow") -> str:
    """Log the run in ``run_dir`` to MLflow, replacing what an earlier logging of it left; return
    the line that says where: the MLflow run, its experiment and the store."""
    import pandas as pd

    from robench.report.corruption_page import split
    from robench.report.merge import board_frame, read_runs

    run_dir = run_folder(run_dir).resolve()  # a folder that is no run fails here, before MLflow loads
    frame, config = board_frame([run_dir])
    frame = pd.concat([frame, split(read_runs([run_dir])[0])[1]], ignore_index=True)  # the corruption cells too
    if frame.empty:
        raise RobenchError(f"no results in {run_dir / RESULTS_FILE}: nothing to log; run `robench run --out {run_dir}` first")
    check(tracker)
    fingerprint = hashlib.sha256(str(run_dir).encode()).hexdigest()[:16]
    tags = {RUN_TAG: fingerprint, "robench.run_dir": str(run_dir), "robench.command": config.get("command", ""),
            "robench.version": config.get("robench_version", "")}
    with _mlflow() as mlflow:
        experiment = _experiment(mlflow)
        earlier = mlflow.search_runs([experiment], f"tags.`{RUN_TAG}` = '{fingerprint}'", output_format="list")
        ok = frame[frame["status"] == "ok"]
        with mlflow.start_run(experiment_id=experiment, run_name=config.get("name"), tags=tags) as parent:
            mlflow.log_params(settings(config))
            mlflow.set_tag("robench.failed_cells", int((frame["status"] != "ok").sum()))
            for (strategy, seed), rows in ok.groupby(["strategy", "seed"], sort=False):
                with mlflow.start_run(experiment_id=experiment, run_name=f"{strategy} seed {seed}", nested=True, tags=tags):
                    first = rows.iloc[0]
                    mlflow.log_params({name: first[name] for name in MODEL_PARAMS})
                    mlflow.log_metrics(model_metrics(rows))
            for path in sorted(run_dir.iterdir()):
                if path.is_file() and path.suffix in (".md", ".json", ".jsonl", ".png", ".csv"):
                    mlflow.log_artifact(str(path))
        for run in earlier:  # only once the new copy is whole: a failure above leaves the earlier one
            mlflow.MlflowClient().delete_run(run.info.run_id)
        return f"MLflow run {parent.info.run_id}, experiment id {experiment}, in {mlflow.get_tracking_uri()}"


def settings(config: dict) -> dict[str, str]:
    """config.json as MLflow params: nested keys joined by dots, lists by commas, each value cut to
    MAX_PARAM characters (the artifact config.json keeps them whole)."""
    params: dict[str, str] = {}

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        params[metric_key(prefix)] = text if len(text) <= MAX_PARAM else text[:MAX_PARAM - 1] + "…"

    add("", {key: value for key, value in config.items() if key not in SKIPPED_SETTINGS})
    return params


def model_metrics(rows) -> dict[str, float]:
    """One model's metrics (robench.core.results' fields that are numbers): its clean row's model metrics
    and calibration as they are, each attacked row's cell metrics as ``metric/attack/eps``."""
    metrics = {}
    for row in rows.to_dict("records"):
        names = (*MODEL_METRICS, *CLEAN_NAMES) if row["attack"] == CLEAN else CELL_METRICS
        where = "" if row["attack"] == CLEAN else f"/{metric_key(row['attack'])}/{eps_label(row['eps']).replace('/', '_')}"
        for name in names:
            value = row.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                metrics[f"{CLEAN_NAMES.get(name, name) if not where else name}{where}"] = float(value)
    return metrics


def metric_key(text: str) -> str:
    """``pgd(steps=20)`` -> ``pgd steps 20``: only the characters MLflow allows in a key."""
    return re.sub(r"\s+", " ", re.sub(r"[^\w.\- ]+", " ", str(text))).strip()


@contextmanager
def _mlflow():
    """MLflow, with its INFO lines (database upgrades, new experiments) kept off the run's output and
    any error it raises turned into one line."""
    import mlflow

    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield mlflow
    except mlflow.exceptions.MlflowException as error:
        message = str(getattr(error, "message", error)).splitlines()[0]
        raise RobenchError(f"MLflow ({mlflow.get_tracking_uri()}): {message}") from None
    finally:
        logger.setLevel(level)


def _experiment(mlflow) -> str:
    """The id of the experiment MLflow's environment names, else of "robench" (created if missing).
    Through a client, not mlflow.set_experiment, which would write MLFLOW_EXPERIMENT_ID into this
    process's environment and so pin every later run of the process to this store's experiment."""
    client = mlflow.MlflowClient()
    if os.environ.get("MLFLOW_EXPERIMENT_ID"):
        return client.get_experiment(os.environ["MLFLOW_EXPERIMENT_ID"]).experiment_id
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)

