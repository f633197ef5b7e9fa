"""Which strategies a leaderboard may rank, and why the others may not.

A rank says "more robust than", which means nothing for a model that learned nothing: a constant
classifier is perfectly "robust", since no attack changes an answer that never depended on the
image (FIELD_NOTES.md, "Comparing strategies fairly"); on a user's 3-class folder dataset such a
model was rank 1, and the paired table called full fine-tuning significantly worse than it. Nor
does a rank mean anything for a strategy the rank's test did not see on the images and seeds the
others were seen on. So a strategy gets no rank, and is never a paired column's best or reference,
when

- **not above chance**: in some seed, the one-sided 95% lower bound of its clean balanced accuracy
  is not above chance, 1 / the number of classes among the attacked images. The bound is the 5th
  percentile of a bootstrap (B = 2000) that draws the attacked images with replacement within each
  class, so that every class keeps its count as balanced accuracy needs. Each seed is a model of its
  own, tested alone: one that learned nothing puts its untouchable answers into the strategy's mean
  whatever the others learned. A constant model scores exactly chance in every replicate, so it
  never passes;
- **one class**: in some seed its most frequent clean prediction covers at least 95% of the
  attacked images, a model all but constant whose few other answers may lift its balanced accuracy
  just above chance;
- **records missing**: a headline column (the first attack at every eps) has no ok row with
  per-image records in a seed where another strategy that passed the two checks above has every
  headline column (a failed cell, a row without records, a strategy run on fewer seeds), so the
  rank's test could not pair it with the others on the same images and seeds;
- **fewer attacks** (issue 28): its worst case at a headline eps lacks, in some seed, an attack
  that another ranked strategy's worst case there includes (a cell that failed or was never run,
  an AutoAttack stopped on a robust model): a worst case over fewer attacks is kinder, so it is not
  compared with theirs. The reason names the missing attacks; re-running the run's command (it
  resumes and runs only the missing cells) completes it.

The first two make a model's robustness meaningless, so it also leaves the paired comparisons; the
third is a gap in the records, and the strategy stays compared on the columns it has.

Which images: the clean row (attack ``none``) carries ``clean_pred`` only for the attacked images
(config.json's ``attacked``: the test set, or the ``--attack-samples`` subset), and config.json
keeps only their labels, so both checks read those. On a subset the balanced accuracy here is the
attacked images', which can differ from the page's `balanced acc` over every test image; it is the
one that matters, being the images whose robustness the rank compares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robench.attack import CLEAN
from robench.core.metrics import eps_label
from robench.core.results import attack_norms
from robench.report import uncertainty
from robench.report.worst_case import WORST_LABELS, survived

CONFIDENCE = 0.95  # the balanced accuracy's one-sided lower bound at this level must exceed chance
ONE_CLASS = 0.95  # a seed whose most frequent prediction covers this share of the images answers one class


@dataclass(frozen=True)
class NotRanked:
    """The strategies without a rank, each with its reason, in the order of the strategies asked about."""

    why: dict[str, str]  # strategy -> the reason, with its numbers
    learned_nothing: frozenset[str]  # those whose model failed a model check: they leave the paired comparisons


def reasons(frame: pd.DataFrame, labels, classes: Sequence[str] | None, strategies: Sequence[str],
            headline: Sequence[tuple[str, float]]) -> NotRanked:
    """Which of ``strategies`` may not be ranked, and why. ``frame`` holds the worst-case rows
    (robench.report.worst_case.with_worst_case) and ``headline`` the rank's columns."""
    labels = np.asarray(labels)
    found = {s: why for s in strategies if (why := model_problem(frame, labels, classes, s))}
    learned = [s for s in strategies if s not in found]
    complete = {s: set(uncertainty.scores_by_seed(frame, labels, s, headline)) for s in learned}
    wanted = set().union(*complete.values())
    gaps = {}
    for strategy in learned:
        seeds = wanted or set(frame.loc[frame["strategy"] == strategy, "seed"].dropna().astype(int))
        if complete[strategy] != seeds and (why := records_problem(frame, labels, strategy, headline, seeds)):
            gaps[strategy] = why
    fewer = attacks_problems(frame, labels, [s for s in learned if s not in gaps], headline)
    gaps |= fewer
    return NotRanked({s: found.get(s) or gaps[s] for s in strategies if s in found or s in gaps}, frozenset(found))


def model_problem(frame: pd.DataFrame, labels: np.ndarray, classes: Sequence[str] | None, strategy: str) -> str | None:
    """Why the trained model has no robustness worth ranking (not above chance, one class), or None."""
    preds = clean_predictions(frame, labels, strategy)
    if not preds:
        return "no clean predictions recorded (its clean rows failed or carry no per-image records)"
    return "; ".join(found for found in (_at_chance(preds, labels), _one_class(preds, classes)) if found) or None


def _at_chance(preds: dict[int, np.ndarray], labels: np.ndarray) -> str | None:
    """The seeds whose balanced accuracy is not surely above chance, with their numbers, or None."""
    chance = 1 / len(np.unique(labels))
    seeds = [f"{100 * point:.1f}% in seed {seed} ({100 * CONFIDENCE:.0f}% lower bound {100 * low:.1f}%)"
             for seed, point, low in zip(preds, *balanced_accuracy_bound(preds, labels)) if low <= chance + 1e-12]
    return f"balanced accuracy {', '.join(seeds)}, not above chance {100 * chance:.1f}%" if seeds else None


def _one_class(preds: dict[int, np.ndarray], classes: Sequence[str] | None) -> str | None:
    """The seeds that answer one class for ONE_CLASS of the images or more, with the class and share, or None."""
    found = []
    for seed, answers in preds.items():
        values, counts = np.unique(answers, return_counts=True)
        if (share := counts.max() / len(answers)) >= ONE_CLASS:
            top = int(values[counts.argmax()])
            name = classes[top] if classes and 0 <= top < len(classes) else str(top)
            found.append(f"`{name}` for {100 * share:.3g}%" + ("" if found else " of the attacked images") + f" in seed {seed}")
    return "answers " + ", ".join(found) if found else None


def clean_predictions(frame: pd.DataFrame, labels: np.ndarray, strategy: str) -> dict[int, np.ndarray]:
    """seed -> the clean prediction of each attacked image, from the strategy's ok clean rows."""
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == CLEAN) & (frame["status"] == "ok")]
    rows = rows.drop_duplicates(["seed"], keep="last")
    hits = survived(rows, labels, "clean_pred")  # None where the records are missing or of other images
    return {int(seed): np.asarray(p) for seed, p, h in zip(rows["seed"], rows["clean_pred"], hits) if h is not None}


def balanced_accuracy_bound(preds: dict[int, np.ndarray], labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, (the balanced accuracy, its one-sided lower bound at CONFIDENCE) from a bootstrap that
    draws the images within each class. Each seed is a model of its own: a seed that learned nothing
    puts its untouchable answers into the strategy's mean whatever the other seeds learned, and a
    bootstrap over two or three seeds would be too coarse to say so."""
    hits = np.stack([answers == labels for answers in preds.values()])  # (S, N)
    rng = np.random.default_rng(uncertainty.SEED)
    recalls, points = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        draws = rng.integers(len(members), size=(uncertainty.REPLICATES, len(members)))
        recalls.append(uncertainty.per_seed_means(hits[:, members], draws))  # (S, B)
        points.append(hits[:, members].mean(1))  # (S,)
    return np.mean(points, axis=0), np.quantile(np.mean(recalls, axis=0), 1 - CONFIDENCE, axis=1)


def records_problem(frame: pd.DataFrame, labels: np.ndarray, strategy: str, headline: Sequence[tuple[str, float]],
                    seeds: set[int]) -> str | None:
    """Which headline columns lack records in which of ``seeds``, and why, or None."""
    found = []
    for attack, eps in headline:
        lacking = sorted(seeds - set(uncertainty.survival_by_seed(frame, labels, strategy, attack, eps)))
        if lacking:
            found.append(f"no {attack}@{eps_label(eps)} in seed {', '.join(map(str, lacking))} "
                         f"({_why(frame, strategy, attack, eps, lacking)})")
    return "; ".join(found) or None


def attacks_problems(frame: pd.DataFrame, labels: np.ndarray, strategies: Sequence[str],
                     headline: Sequence[tuple[str, float]]) -> dict[str, str]:
    """strategy -> which attacks its worst case lacks at a headline eps (in which seeds), where the
    worst case of another of ``strategies`` includes them: like is compared with like only."""
    hits = survived(frame, labels)
    usable = frame[(frame["status"] == "ok") & hits.notna() & (frame["attack"] != CLEAN) & ~frame["attack"].isin(WORST_LABELS)]
    found: dict[str, list[str]] = {}
    for attack, eps in headline:
        if attack not in WORST_LABELS:
            continue
        cells = usable[(usable["eps"] == eps) & (attack_norms(usable) == WORST_LABELS[attack])]
        ran = {(s, int(seed)): set(group["attack"]) for (s, seed), group in cells.groupby(["strategy", "seed"])}
        everyone = set().union(*(attacks for (s, _), attacks in ran.items() if s in strategies))
        for strategy in strategies:
            seeds = sorted(seed for s, seed in ran if s == strategy)
            lacking = {seed: sorted(everyone - ran[(strategy, seed)]) for seed in seeds if everyone - ran[(strategy, seed)]}
            for seed, missing in lacking.items():
                found.setdefault(strategy, []).append(
                    f"its {attack}@{eps_label(eps)} lacks {', '.join(missing)} in seed {seed}, which another strategy's "
                    "includes: it would be kinder, not comparable; re-run the run's command to complete it")
    return {strategy: "; ".join(lines) for strategy, lines in found.items()}


def _why(frame: pd.DataFrame, strategy: str, attack: str, eps: float, seeds: list[int]) -> str:
    """What the results file says about a cell without records: failed, written without records, or
    absent; for a worst case, derived from the attacks at its eps, what they say."""
    rows = frame[(frame["strategy"] == strategy) & (frame["eps"] == eps) & frame["seed"].isin(seeds)]
    worst = attack in WORST_LABELS
    rows = rows[~rows["attack"].isin([CLEAN, *WORST_LABELS])] if worst else rows[rows["attack"] == attack]
    if rows.empty:
        return "not run"
    if (rows["status"] == "failed").any():
        return "an attack failed there" if worst else "failed"
    return "fewer than two of its attacks have records there" if worst else "no per-image records"


def section(found: NotRanked) -> str:
    """The lines under the main table: each strategy without a rank, with its reason and numbers."""
    return "\n\n".join(f"Not ranked: {strategy}: {why}." for strategy, why in found.why.items())
