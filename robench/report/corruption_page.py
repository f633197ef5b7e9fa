"""The page's corruption section: accuracy under MedMNIST-C's dermatoscopy corruptions, beside the attacks.

Corruption rows (family ``corruption``, robench.pipeline.corruptions) hold a severity in their eps
column, so they are taken out of the attack tables, flags and worst case before anything else reads
the rows (:func:`split`), and get this section of their own: per severity, each model's accuracy
under each corruption and under the worst over them (per image: right only if right under every
corruption of that severity), with the same 95% intervals as every robust accuracy; paired tests
on the worst corruption (McNemar per seed, Stouffer, Holm, robench.report.uncertainty); per-class
recall under the worst corruption at the highest severity; and the mean ECE of the answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from robench.attack import CLEAN
from robench.core.corruption_names import FAMILY
from robench.core.names import markdown_table
from robench.report import per_class, uncertainty
from robench.report.worst_case import worst_case_rows

WORST = "worst corruption"


def split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows without corruption rows, the corruption rows)."""
    if "attack_family" not in frame:
        return frame, frame.iloc[0:0]
    shifted = frame["attack_family"] == FAMILY
    return frame[~shifted], frame[shifted]


def section(clean: pd.DataFrame, shifted: pd.DataFrame, labels, config: Mapping, strategies: Sequence[str]) -> str | None:
    """The section, from the run's clean rows and its corruption rows; None without corruption rows."""
    shifted = shifted[shifted["status"] == "ok"]
    if shifted.empty or labels is None:
        return None
    worst = worst_case_rows(shifted, labels).assign(attack=WORST, attack_name=WORST)
    frame = pd.concat([clean[clean["attack"] == CLEAN], shifted, worst], ignore_index=True)
    names = list(dict.fromkeys(shifted["attack"]))
    severities = sorted(shifted["eps"].unique())
    parts = ["## Corruptions"]
    for severity in severities:
        columns = [WORST, *names] if len(worst) else names
        table = {"strategy": list(strategies)}
        for name in columns:
            table[f"{name}@{severity:g}"] = [_cell(frame, labels, s, name, severity) for s in strategies]
        parts += [f"Severity {severity:g}:", markdown_table(pd.DataFrame(table))]
    parts.append(
        "Accuracy in % over all attacked images (those wrong on clean included: a corruption is a shift, not an attack on "
        "what was right), mean [95% interval] over seeds and images, under MedMNIST-C's dermatoscopy corruptions (Di Salvo "
        f"et al. 2024, package `medmnistc`, its dermamnist parameters) at severity 1 (mild) to 5; `{WORST}`: an image "
        "counts only if the model is right under every corruption of that severity. Each image is corrupted the same way "
        "for every model, seeded by seed and image (robench/pipeline/corruptions.py); the rows are in results.jsonl with "
        "family `corruption`, the severity in the eps column, and stay out of the attack tables and their worst case.")
    if len(worst):
        columns = [(WORST, severity) for severity in severities]
        tested = uncertainty.paired_section(uncertainty.against_the_best(frame, labels, strategies, columns), strategies, columns)
        if tested:
            parts.append(tested.replace("## Paired comparisons", "### Paired comparisons under the worst corruption", 1)
                         .replace("robust accuracy (all attacked images)", "accuracy under the worst corruption", 1))
        classes = (config.get("dataset") or {}).get("classes")
        recall = per_class.recall_table(frame, labels, classes, strategies, WORST, severities[-1]) if classes else None
        if recall is not None:
            parts += [f"### Per-class recall, clean → under the worst corruption at severity {severities[-1]:g}",
                      markdown_table(recall)]
    parts += ["### Calibration under corruption", markdown_table(_ece(shifted, strategies, severities)),
              "Expected calibration error in % (15 bins) of the answers under each corruption, mean over the corruptions "
              "and seeds of a severity; each cell's own ECE and NLL are its row's `ece` and `nll`."]
    return "\n\n".join(parts)


def _cell(frame: pd.DataFrame, labels, strategy: str, attack: str, severity: float) -> str:
    by_seed = uncertainty.survival_by_seed(frame, labels, strategy, attack, severity)
    if not by_seed or len({len(v) for v in by_seed.values()}) != 1:
        return "–"
    return uncertainty.with_interval(np.mean([v.mean() for v in by_seed.values()]), by_seed)


def _ece(shifted: pd.DataFrame, strategies: Sequence[str], severities) -> pd.DataFrame:
    rows = shifted.assign(ece=pd.to_numeric(shifted.get("ece"), errors="coerce"))
    table = {"strategy": list(strategies)}
    for severity in severities:
        means = rows[rows["eps"] == severity].groupby("strategy")["ece"].mean()
        table[f"severity {severity:g}"] = [f"{100 * means[s]:.2f}" if s in means and pd.notna(means[s]) else "–"
                                           for s in strategies]
    return pd.DataFrame(table)
