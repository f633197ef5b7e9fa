"""Per-class recall before and after the attacks: which lesions a model keeps, and which it gives up.

A robust accuracy over all attacked images is dominated by HAM10000's majority class (`nv`, two
thirds of the images): a model that keeps only `nv` images correct under attack can score well
and still miss every melanoma. This table shows, per class, the clean recall and the recall
under the worst case over the run's attacks (robench.report.worst_case), from the per-image records,
with the number of attacked images of each class (rare classes have a handful: their recalls
move by tens of points per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robench.attack import CLEAN
from robench.core.metrics import eps_label
from robench.core.names import markdown_table
from robench.core.results import attack_norms
from robench.report.uncertainty import survival_by_seed
from robench.report.worst_case import WORST, WORST_LABELS, norm_of, survived, worst_label


def recall_table(frame: pd.DataFrame, labels, classes: Sequence[str], strategies: Sequence[str],
                 attack: str, eps: float, malignant: Sequence[str] = ()) -> pd.DataFrame | None:
    """Rows: strategies; a column per class: ``clean → attacked`` recall in % (mean over seeds); with
    ``malignant`` classes, a last column: the share of the malignant images correct before the attacks
    that some attack of ``attack``'s norm at ``eps`` made the model call benign (a missed cancer), mean
    over seeds."""
    labels = np.asarray(labels)
    table = {"strategy": []}
    counts = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    columns = {c: f"{c} (n={counts[c]})" for c in classes if counts[c]}
    for column in columns.values():
        table[column] = []
    for strategy in strategies:
        attacked = survival_by_seed(frame, labels, strategy, attack, eps)
        clean = _clean_hits(frame, labels, strategy)
        if not attacked or not clean:
            continue
        table["strategy"].append(strategy)
        for i, c in enumerate(classes):
            if c in columns:
                mask = labels == i
                before = np.mean([hits[mask].mean() for hits in clean.values()])
                after = np.mean([hits[mask].mean() for hits in attacked.values()])
                table[columns[c]].append(f"{100 * before:.0f} → {100 * after:.0f}")
        if malignant:
            worst = worst_label(norm_of(frame, attack))
            missed = _missed_cancers(frame, labels, classes, malignant, strategy, eps, clean, worst)
            table.setdefault(MISSED, []).append(missed)
    if malignant and table["strategy"]:
        n = int(np.isin(labels, [classes.index(c) for c in malignant]).sum())
        table[f"{MISSED} (n={n})"] = table.pop(MISSED)
    return pd.DataFrame(table) if table["strategy"] else None


MISSED = "malignant → benign"


def _missed_cancers(frame, labels, classes, malignant, strategy, eps, clean, attack: str = WORST) -> str:
    """% of the clean-correct malignant images that ``attack`` (a worst case: any attack of its norm)
    at ``eps`` turned into a benign answer."""
    rate = missed_cancer_rate(frame, labels, classes, malignant, strategy, eps, clean, attack)
    return "—" if np.isnan(rate) else f"{100 * rate:.0f}"


def missed_cancer_rate(frame, labels, classes, malignant, strategy, eps, clean, attack: str = WORST) -> float:
    """The fraction behind :func:`_missed_cancers`, mean over seeds; NaN where no seed has a malignant
    image correct before the attack."""
    bad = np.isin(labels, [classes.index(c) for c in malignant])
    benign = [i for i, c in enumerate(classes) if c not in malignant]
    rows = frame[(frame["strategy"] == strategy) & (frame["eps"] == eps) & (frame["status"] == "ok")
                 & (frame["attack"] != CLEAN) & ~frame["attack"].isin(WORST_LABELS)]
    if attack in WORST_LABELS:  # eps is a radius in one norm: attacks of another one are not "at eps"
        rows = rows[attack_norms(rows) == WORST_LABELS[attack]]
    else:
        rows = rows[rows["attack"] == attack]
    rates = []
    for seed, hits in clean.items():
        preds = [np.asarray(p) for p in rows.loc[rows["seed"] == seed, "adv_pred"] if isinstance(p, list)]
        at_risk = bad & hits
        if preds and at_risk.any():
            flipped = np.logical_or.reduce([np.isin(p, benign) for p in preds]) & at_risk
            rates.append(flipped.sum() / at_risk.sum())
    return float(np.mean(rates)) if rates else float("nan")


def tidy(frame: pd.DataFrame, labels, classes: Sequence[str], strategies: Sequence[str],
         columns: Sequence[tuple[str, float]], malignant: Sequence[str] = ()) -> pd.DataFrame:
    """Every strategy, attack@eps and class: images, clean and robust recall (fractions, mean over
    seeds) and the attack's malignant-to-benign rate: the CSV written beside a page."""
    labels = np.asarray(labels)
    out = []
    for strategy in strategies:
        clean = _clean_hits(frame, labels, strategy)
        for attack, eps in columns:
            attacked = survival_by_seed(frame, labels, strategy, attack, eps)
            if not attacked or not clean:
                continue
            missed = (missed_cancer_rate(frame, labels, list(classes), malignant, strategy, eps, clean, attack)
                      if malignant else float("nan"))
            for i, c in enumerate(classes):
                mask = labels == i
                if mask.any():
                    out.append({"strategy": strategy, "attack": attack, "eps": eps, "class": c, "n_images": int(mask.sum()),
                                "clean_recall": np.mean([h[mask].mean() for h in clean.values()]),
                                "robust_recall": np.mean([h[mask].mean() for h in attacked.values()]),
                                "malignant_to_benign": missed})
    return pd.DataFrame(out, columns=["strategy", "attack", "eps", "class", "n_images", "clean_recall",
                                      "robust_recall", "malignant_to_benign"])


def _clean_hits(frame: pd.DataFrame, labels: np.ndarray, strategy: str) -> dict[int, np.ndarray]:
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == CLEAN) & (frame["status"] == "ok")]
    return {int(seed): hits for seed, hits in zip(rows["seed"], survived(rows, labels, "clean_pred")) if hits is not None}


def section(frame: pd.DataFrame, labels, classes: Sequence[str] | None, strategies: Sequence[str],
            columns: Sequence[tuple[str, float]], malignant: Sequence[str] = ()) -> str:
    """One table per eps of each worst-case column (or of the first attack when no eps has two)."""
    if labels is None or not classes or not columns:
        return ""
    worst = [column for column in columns if column[0] in WORST_LABELS]
    first_attack = columns[0][0]
    chosen = worst or [column for column in columns if column[0] == first_attack]
    parts = []
    for attack, eps in chosen:
        table = recall_table(frame, labels, list(classes), strategies, attack, eps, malignant)
        if table is not None:
            parts.append(f"Under `{attack}@{eps_label(eps)}`:\n\n" + markdown_table(table))
    if not parts:
        return ""
    return "## Per-class recall\n\n" + explanation(malignant) + "\n\n" + "\n\n".join(parts)


def explanation(malignant: Sequence[str] = ()) -> str:
    """What a per-class table's cells mean: the markdown page and the website both say it."""
    return ("Each cell: the share of the attacked images of that class the model classified correctly, clean → "
            "after the attack (%, mean over seeds); `n` is the number of attacked images of the class. A model "
            "whose robust accuracy comes from one class keeps only that column. Every attack@eps, as numbers: the "
            "page's `-per-class.csv`."
            + (f" `{MISSED}`: of the malignant images ({', '.join(malignant)}) the model got right before the "
               "attacks, the % that some attack at that eps (of the table's norm) made it call a benign class: a missed "
               "cancer."
               if malignant else ""))
