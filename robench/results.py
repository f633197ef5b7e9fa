"""The results file: one JSON line per (strategy, seed, attack, eps) cell, appended as it finishes.

Rows are plain dicts so that anything (pandas, jq, a spreadsheet) can read them. A row is
written with one ``write`` of a whole line and flushed to disk before the next cell starts,
so a crash loses at most the cell that was running; a torn last line is ignored on reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"

# Every row has these keys. Metrics are fractions in [0, 1]; eps is in [0, 1] pixel units.
ROW_FIELDS = (
    # which cell
    "strategy",  # label as given on the command line, e.g. "vpt_deep(prompts=5)"
    "strategy_name",  # plugin name, e.g. "vpt_deep"
    "seed",
    "attack",  # label, e.g. "pgd(steps=20)"; "none" for the clean-only row of a model
    "attack_name",
    "attack_family",  # the plugin's family (robench.attack.FAMILIES), for the sanity flags
    "attack_black_box",  # True for query-based attacks that never read gradients
    "eps",
    # clean metrics of the model (the same in every row of one strategy and seed)
    "n_test",
    "clean_acc",
    "clean_bacc",
    "majority_acc",  # always answering the training split's most frequent class
    "n_attacked",  # test images the attacks run on: all of them, or the --attack-samples subset
    "attack_clean_acc",  # clean accuracy on those images: robust_acc never exceeds it
    # robustness: two protocols, each with its own denominator
    "robust_acc",  # over all attacked images; wrong-on-clean counts as a failure (RobustBench)
    "robust_bacc",  # balanced accuracy of the same predictions
    "n_clean_correct",
    "acc_on_correct",  # over the clean-correct images only (the seed study's protocol)
    "attack_success_rate",  # 1 - acc_on_correct
    # costs
    "trainable_params",
    "backbone_params",
    "epochs",
    "best_epoch",
    "train_seconds",
    "seconds_per_epoch",
    "peak_mem_mb",
    "attack_seconds",
    # outcome
    "status",  # "ok" or "failed"
    "error",  # one line, for failed cells
)


def append_row(run_dir: Path, row: dict) -> None:
    """Append one row as a single line and make it durable before returning."""
    line = json.dumps(row, sort_keys=True, default=_jsonable) + "\n"
    fd = os.open(Path(run_dir) / RESULTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_rows(run_dir: Path) -> list[dict]:
    """Every complete row of a run, in the order written; a torn last line is skipped."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n") and line.strip():
            rows.append(json.loads(line))
    return rows


def read_frame(run_dir: Path) -> pd.DataFrame:
    """The rows of a run as a DataFrame with every ROW_FIELDS column present."""
    return pd.DataFrame(read_rows(run_dir), columns=list(ROW_FIELDS))


def write_config(run_dir: Path, config: dict) -> None:
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_jsonable) + "\n")


def read_config(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / CONFIG_FILE).read_text())


def _jsonable(value):
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a results file")
