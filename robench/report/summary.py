"""A run's rows summarised: mean, std and seed count per (strategy, attack, eps, metric), and the
two protocols a robust accuracy is counted under. What the leaderboard page, its plots and its
flags share, without any formatting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robench.attack import CLEAN, ESCALATION
from robench.core.names import check_name, name_from
from robench.core.results import CELL_METRICS, CONFIG_FILE, MODEL_METRICS, read_config
from robench.defense import NONE, combined_label

UNKNOWN = "unknown"

MISSING_CELL = "—"

@dataclass(frozen=True)
class Protocol:
    """How a robust accuracy is counted; the page names it and its denominator every time."""

    metric: str
    title: str
    denominator: str  # may contain {n_test}
    subset_denominator: str  # with --attack-samples; may contain {n} (attacked) and {of} (test images)

PROTOCOLS = {
    "all": Protocol(
        metric="robust_acc",
        title="robust accuracy over all test images (RobustBench protocol)",
        denominator="all {n_test} test images; an image the model got wrong before the attack "
        "counts as a failure, so these columns never exceed clean acc",
        subset_denominator="the {n} attacked test images, a class-stratified subset of the {of}, the same "
        "for every model; an image the model got wrong before the attack counts as a failure, so these "
        "columns never exceed clean acc (attacked), the clean accuracy on those {n}",
    ),
    "correct": Protocol(
        metric="acc_on_correct",
        title="accuracy on the clean-correct subset (the seed study's protocol)",
        denominator="only the test images each model classified correctly before the attack "
        "(n_clean_correct, which differs per model and seed); multiply by clean acc "
        "to compare with the other protocol",
        subset_denominator="only the attacked test images (a class-stratified subset of {n} of the {of}) "
        "that each model classified correctly before the attack (n_clean_correct, which differs per model "
        "and seed); multiply by clean acc (attacked) to compare with the other protocol",
    ),
}

DEFAULT_PROTOCOL = "all"

def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count per (strategy, attack, eps, metric), failed rows left out.

    Tidy, one statistic per row, so that a caller picks what it needs: the leaderboard one
    protocol, a plot every eps of one attack, a flag the curve of each attack. Model metrics
    (clean accuracy, costs) carry ``attack == CLEAN`` ("none") and a NaN eps. A cell written twice
    (a resumed run) counts once, its last version.
    """
    ok = frame[frame["status"] != "failed"]
    models = ok.groupby(["strategy", "seed"], sort=False, dropna=False)[list(MODEL_METRICS)].first()
    models = models.reset_index().assign(attack=CLEAN, eps=math.nan)
    cell_keys = ["strategy", "seed", "attack", "eps"]
    cells = ok[ok["attack"] != CLEAN].drop_duplicates(cell_keys, keep="last")
    parts = [
        _stats(models, MODEL_METRICS),
        _stats(cells[cell_keys + list(CELL_METRICS)], CELL_METRICS),
    ]
    if {"ece", "nll"} <= set(ok.columns):  # the clean row's calibration, a model metric as "clean_ece", "clean_nll"
        clean = ok[ok["attack"] == CLEAN].drop_duplicates(cell_keys, keep="last").assign(eps=math.nan)
        parts.append(_stats(clean.rename(columns={"ece": "clean_ece", "nll": "clean_nll"}), ("clean_ece", "clean_nll")))
    return pd.concat(parts, ignore_index=True)

def _stats(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    long = table.melt(id_vars=["strategy", "seed", "attack", "eps"], value_vars=list(metrics), var_name="metric")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    grouped = long.groupby(["strategy", "attack", "eps", "metric"], sort=False, dropna=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    return stats[stats["n"] > 0]

def attacked_labels(config: Mapping) -> list[int] | None:
    """The labels of the attacked images, in the order of the rows' per-image predictions; None
    for a run written before robench kept them (its pages then have no worst-case column)."""
    attacked = config.get("attacked")
    return attacked.get("labels") if isinstance(attacked, Mapping) else None

def model_order(config: Mapping) -> list[str]:
    """The row labels in the command's order: each strategy, then it under each defense."""
    return [combined_label(strategy, defense)
            for strategy in config.get("strategies") or () for defense in config.get("defenses") or (NONE,)]

def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]

def _ordered(values: pd.Series, preferred: Sequence) -> list:
    """``preferred`` first (those present), then the rest in order of first appearance."""
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]

def _attack_columns(frame: pd.DataFrame, attack_order: Sequence[str]) -> list[tuple[str, float]]:
    """(attack, eps) pairs of every attacked row, failed ones too so that their column shows; not the
    escalation rows (robench.pipeline.escalation), which enter the worst case and a section of their own: alone,
    an escalation row is the worst case again."""
    attacked = frame[(frame["attack"] != CLEAN) & frame["attack"].notna() & frame["eps"].notna()]
    if "attack_family" in attacked:
        attacked = attacked[attacked["attack_family"] != ESCALATION]
    attacks = _ordered(attacked["attack"], attack_order)
    return [
        (attack, float(eps))
        for attack in attacks
        for eps in sorted(attacked.loc[attacked["attack"] == attack, "eps"].unique())
    ]


def run_name(config: Mapping, run_dir: Path) -> str:
    """The config's name, else the run dir's (old runs may not have written one): a name, never a path."""
    if config.get("name"):
        return check_name(config["name"], f"{Path(run_dir) / CONFIG_FILE}: field name")
    return name_from(Path(run_dir).resolve().name)


def _config(run_dir: Path) -> dict:
    """The run's config, or an empty one for a run too old to have written it."""
    return read_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}
