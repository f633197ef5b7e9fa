"""The results file: one JSON line per (strategy, seed, attack, eps) cell, appended as it finishes.

Rows are plain dicts so that anything (pandas, jq, a spreadsheet) can read them. A row is
written with one ``write`` of a whole line and flushed to disk before the next cell starts,
so a crash loses at most the cell that was running; a torn last line is ignored on reading and
cut off by :func:`drop_torn_tail` before a resumed run appends, so no row is glued onto it.
A cell written more than once (a failed cell retried by a resumed run) counts in its last version.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pandas as pd

from robench.attack import CLEAN, LEGACY_NORM, MINIMAL
from robench.core import schema
from robench.core.atomic import replacing
from robench.core.names import refuse_link
from robench.defense import NONE, combined_label
from robench.errors import RobenchError

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "config.json"


def run_folder(path: Path | str) -> Path:
    """``path`` if it is a run's folder (the ``--out`` of ``robench run``: it holds config.json),
    else one line saying what it is instead; every command that reads a run starts here."""
    path = Path(path)
    if not path.is_dir():
        raise RobenchError(f"run directory {path} not found: pass the --out folder of a robench run")
    if not (path / CONFIG_FILE).is_file():
        what = "a merged page's folder" if (path / "leaderboard.md").is_file() else "not a robench run folder"
        raise RobenchError(f"{path} is {what} (it has no {CONFIG_FILE}): pass the --out folder of a robench run")
    return path
# Version of the layout of results.jsonl and config.json, stored in config.json as "format".
# Bump it when a row or config field changes meaning; a run dir of another format is not resumed.
FORMAT = 1
# The fields that name a cell: a later row with the same values supersedes an earlier one.
CELL_FIELDS = ("strategy", "seed", "attack", "eps")

# Properties of a trained model: the same in every row of one (strategy, seed).
# Metrics are fractions in [0, 1].
MODEL_METRICS = (
    "n_test",
    "clean_acc",
    "clean_bacc",
    "majority_acc",  # always answering the training split's most frequent class
    "n_attacked",  # test images the attacks run on: all of them, or the --attack-samples subset
    "attack_clean_acc",  # clean accuracy on those images: robust_acc never exceeds it
    "trainable_params",
    "backbone_params",
    "epochs",
    "best_epoch",
    "train_seconds",
    "seconds_per_epoch",
    "peak_mem_mb",
)
# Properties of one attacked cell: robustness under two protocols, each with its own denominator.
CELL_METRICS = (
    "robust_acc",  # over all attacked images; wrong-on-clean counts as a failure (RobustBench)
    "robust_bacc",  # balanced accuracy of the same predictions
    "n_clean_correct",
    "acc_on_correct",  # over the clean-correct images only (the seed study's protocol)
    "attack_success_rate",  # 1 - acc_on_correct
    "attack_seconds",
    "ece",  # expected calibration error, 15 bins, of the answers on the cell's images (the clean row: all test images)
    "nll",  # their mean negative log-likelihood of the true class (robench.pipeline.calibration); None: not measured
    "eps_max",  # a minimal attack's (robench.attack.MinimalAttack): eps* is searched up to it; None otherwise
    "escalated",  # an escalation row's (robench.pipeline.escalation): the survivors of every attack it was given
    "escalation_fooled",  # ... how many of them it fooled
    "escalation_rounds",  # ... in how many rounds
)
# Per-image records, lists over the attacked images in config.json's ``attacked`` order (ids,
# labels): they travel inside the row, so a row never exists without them.
RECORD_FIELDS = (
    "clean_pred",  # the clean row's: the model's prediction on each attacked image
    "adv_pred",  # an attacked row's: the prediction after the attack (a clean-wrong image is not attacked)
    "min_eps",  # a minimal attack's row: each image's eps* (0 for a clean-wrong image, None above eps_max)
)
# Every row has these keys; eps is in [0, 1] pixel units.
ROW_FIELDS = (
    # which cell
    "strategy",  # label as given on the command line, e.g. "vpt_deep(prompts=5)", with the defense
    # it trained under after " + ": "vpt_deep(prompts=5) + pgd_at(eps=0.01)" (robench.defense.combined_label)
    "strategy_name",  # plugin name, e.g. "vpt_deep"
    "defense",  # label, e.g. "pgd_at(eps=0.01)"; "none" for a model trained without a defense
    "defense_name",  # plugin name, e.g. "pgd_at"; "none" without a defense
    "seed",
    "attack",  # label, e.g. "pgd(steps=20)"; "none" for the clean-only row of a model
    "attack_name",
    "attack_family",  # the plugin's family (robench.attack.FAMILIES), for the sanity flags
    "attack_norm",  # the plugin's norm (robench.attack.NORMS), the ball eps is a radius of; attacks of
    # different norms are never compared or combined. Older rows lack it and read as "Linf" (attack_norms)
    "attack_black_box",  # True for attacks that never read the model's gradients (query-based, transfer)
    "attack_source",  # a transfer attack's surrogate: "pretrained" or the strategy label it was crafted on
    "eps",
    "node",  # the machine that computed the row: its host name, and on Ray the node (robench.pipeline.executors)
    "device",  # the device that computed it ("cpu", "cuda"): on Ray with --device auto, each task's own
    *MODEL_METRICS,
    *CELL_METRICS,
    "reliability",  # the clean row's reliability diagram: per confidence bin its count, accuracy and mean confidence
    *RECORD_FIELDS,
    # outcome
    "status",  # "ok" or "failed"
    "error",  # one line, for failed cells
)


def own_file(path: Path) -> Path:
    """``path`` if it is a regular file of the run folder or absent; one line if it is a symbolic link
    (writing through it would change a file outside ``--out``) or not a regular file (a named pipe
    would hang the reader)."""
    path = Path(path)
    refuse_link(path, "--out")
    if path.exists() and not path.is_file():
        raise RobenchError(f"{path} is not a regular file (a folder, a pipe or a device): move it away, or use another --out")
    return path


def append_row(run_dir: Path, row: dict) -> None:
    """Append one row as a single line and make it durable before returning."""
    line = json.dumps(row, sort_keys=True, default=_jsonable) + "\n"
    path = own_file(Path(run_dir) / RESULTS_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            data = line.encode()
            written = os.write(fd, data)
            if written != len(data):  # a full disk writes part of the line: take it back
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RobenchError(
            f"cannot append to {path} ({exc.strerror or exc}): free disk space or fix its permissions, "
            "then run the same command again to resume"
        ) from None


def read_rows(run_dir: Path) -> list[dict]:
    """Every complete row of a run, in the order written; a torn last line is skipped. Each row is
    checked against its shape and its per-image records against config.json's attacked images and
    classes (robench.core.schema), so that a damaged row is one line here, not a traceback in a page."""
    path = own_file(Path(run_dir) / RESULTS_FILE)
    if not path.exists():
        return []
    config = read_config(run_dir) if (Path(run_dir) / CONFIG_FILE).exists() else {}
    sizes, listed = (schema.sizes(config), _listed(config)) if config else ((None, None), None)
    rows = []
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        if line.endswith(b"\n") and line.strip():
            advice = ("the file was edited or damaged; delete that line and run the same `robench run` command "
                      "to compute its cell again, or use another --out")
            try:
                row = json.loads(line)
            except ValueError:  # not JSON, or not UTF-8
                raise RobenchError(f"{path} line {number} is not a JSON row: {advice}") from None
            schema.check(row, schema.ROW, f"{path} line {number}", advice)
            if (found := schema.records_problem(row, *sizes)) is not None:
                raise RobenchError(f"{path} line {number}: {found}: {advice}")
            if listed is not None and (found := _unlisted(row, *listed)) is not None:
                raise RobenchError(f"{path} line {number}: {found}: the rows and config.json come from different runs, or "
                                   "one was edited; delete that line, or make the page from the run that wrote it")
            rows.append(row)
    return rows


def _listed(config: dict) -> tuple[set[str], set[int]] | None:
    """The models (strategy with defense) and seeds config.json says the run has, or None where it does not say."""
    strategies, seeds = config.get("strategies"), config.get("seeds")
    if not isinstance(strategies, list) or not isinstance(seeds, list):
        return None
    defenses = config.get("defenses") or [NONE]
    return {combined_label(s, d) for s in strategies for d in defenses}, set(seeds)


def _unlisted(row: dict, models: set[str], seeds: set[int]) -> str | None:
    """Why a row's model is not one of the run's (a page would rank it silently), or None."""
    if row.get("strategy") not in models:
        return f"field strategy {row.get('strategy')!r} is not a model config.json lists ({', '.join(sorted(models))})"
    if row.get("seed") not in seeds:
        return f"field seed {row.get('seed')!r} is not a seed config.json lists ({', '.join(map(str, sorted(seeds)))})"
    return None


def latest(rows: list[dict]) -> list[dict]:
    """Each cell's last version, in the order the cells were first written."""
    by_cell = {}
    for row in rows:
        by_cell[cell_of(row)] = row
    return list(by_cell.values())


def cell_of(row: dict) -> tuple:
    """The (strategy, seed, attack, eps) a row is about."""
    return tuple(row[field] for field in CELL_FIELDS)


def read_frame(run_dir: Path) -> pd.DataFrame:
    """The latest version of every cell of a run as a DataFrame with every ROW_FIELDS column present;
    an attacked row written before robench recorded ``attack_norm`` gets "Linf", the norm it ran in."""
    frame = pd.DataFrame(latest(read_rows(run_dir)), columns=list(ROW_FIELDS))
    return frame.assign(attack_norm=attack_norms(frame).where(frame["attack"] != CLEAN, None))


def attack_norms(frame: pd.DataFrame) -> pd.Series:
    """Each row's ``attack_norm``, "Linf" where it is missing: a row written before robench recorded
    the norm (every attack then was L-inf) or a hand-built frame. What flags, the worst case and plots
    group by, so that they never compare or combine attacks whose eps mean different things."""
    if "attack_norm" not in frame:
        return pd.Series(LEGACY_NORM, index=frame.index, dtype=object)
    return frame["attack_norm"].astype(object).where(frame["attack_norm"].notna(), LEGACY_NORM)


def read_records(run_dir: Path) -> pd.DataFrame:
    """The per-image records of a run, one row per (strategy, seed, attack, eps, image): the image's
    id and label, the model's clean prediction and, for an attacked row, its prediction after the
    attack (the clean row's ``adv_pred`` is its clean prediction), and for a minimal attack's row
    ``min_eps``, the image's eps* (inf: not fooled up to eps_max; NaN for other rows). Every metric of
    a row can be recomputed from its records: ``robust_acc`` is the mean of ``adv_pred == label``,
    and for a minimal attack also the mean of ``min_eps > eps``."""
    config = read_config(run_dir)
    attacked = config.get("attacked") or {}
    ids, labels = attacked.get("ids"), attacked.get("labels")
    if not ids:
        raise RobenchError(f"{Path(run_dir) / CONFIG_FILE} lists no attacked images: the run was written before "
                           "robench kept per-image records; run it again into a new --out")
    rows = [row for row in latest(read_rows(run_dir)) if row.get("status") == "ok"]
    clean = {(row["strategy"], row["seed"]): row.get("clean_pred") for row in rows if row["attack"] == CLEAN}
    parts = []
    for row in rows:
        model_clean = clean.get((row["strategy"], row["seed"]))
        preds = model_clean if row["attack"] == CLEAN else row.get("adv_pred")
        if preds is None or model_clean is None or len(preds) != len(ids):
            continue
        min_eps = row.get("min_eps") if isinstance(row.get("min_eps"), list) else [None] * len(ids)
        parts.append(pd.DataFrame({"strategy": row["strategy"], "seed": row["seed"], "attack": row["attack"],
                                   "eps": row["eps"], "image_id": ids, "label": labels,
                                   "clean_pred": model_clean, "adv_pred": preds,
                                   "min_eps": [float("inf") if e is None else e for e in min_eps]
                                   if row.get("attack_family") == MINIMAL else float("nan")}))
    columns = ["strategy", "seed", "attack", "eps", "image_id", "label", "clean_pred", "adv_pred", "min_eps"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def drop_torn_tail(run_dir: Path) -> int:
    """Cut a torn last line (a write interrupted by a crash) off the results file; return the bytes cut.

    Call it while holding the run's lock, before appending: otherwise the next row would be
    glued onto the torn one and both would be lost.
    """
    path = own_file(Path(run_dir) / RESULTS_FILE)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep == len(data):
            return 0
        f.truncate(keep)
        os.fsync(f.fileno())
    return len(data) - keep


def write_config(run_dir: Path, config: dict) -> None:
    """Replace config.json atomically: a crash leaves the old or the new one, never half of one."""
    with replacing(Path(run_dir) / CONFIG_FILE) as partial:
        partial.write_text(json.dumps(config, indent=2, default=_jsonable) + "\n")


def read_config(run_dir: Path) -> dict:
    """A run's config.json, checked against its shape (robench.core.schema): one line naming the field if not."""
    path = own_file(Path(run_dir) / CONFIG_FILE)
    advice = "restore the file robench wrote, or run the command again with another --out"
    try:
        config = json.loads(path.read_bytes())
    except ValueError:  # not JSON, or not UTF-8
        raise RobenchError(f"{path} is not valid JSON: {advice}") from None
    except OSError as exc:
        raise RobenchError(f"cannot read {path} ({exc.strerror}): fix its permissions or pass another --out") from None
    schema.check(config, schema.CONFIG, str(path), advice)
    if (found := schema.attacked_problem(config)) is not None:
        raise RobenchError(f"{path}: {found}: {advice}")
    return config


def _jsonable(value):
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a results file")
