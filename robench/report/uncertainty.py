"""How sure a leaderboard's robust accuracies are, and which differences between strategies are real.

With 100 attacked images a robust accuracy of 10% has a 95% interval about 12 points wide, and
seeds add their own spread (FIELD_NOTES.md, "Statistics for robustness tables"). Everything here
is computed from the per-image records of the rows (``adv_pred`` and the attacked images' labels).

- **Interval** of a cell (a strategy at one attack and eps): a two-level bootstrap, B = 2000
  replicates, each drawing the seeds with replacement and the attacked images with replacement
  (one image draw shared by the seeds, which attacked the same images), percentile 95%, always
  widened to contain the Clopper-Pearson exact interval of the mean count of survivors over the
  attacked images (scipy.stats.binomtest): where every seed has 0 or 100% the bootstrap cannot see
  image noise and would collapse to a point, and elsewhere the widening is conservative.
- **Paired comparison** of two strategies on one column: the difference of their robust
  accuracies with a bootstrap interval (images drawn once for both, seeds drawn for each);
  its p-value from McNemar's exact test on the images one model kept and the other lost
  (scipy.stats.binomtest on the discordant images); with several seeds, each seed's one-sided
  exact p-values combined by Stouffer's method in each direction and doubled from the smaller
  (scipy.stats.combine_pvalues), so seeds pointing opposite ways cancel; Holm's correction over
  every comparison of a page (statsmodels.stats.multitest.multipletests).
- **Rank** over several eps columns of one attack (:func:`ranks`): the image is the unit, since
  columns of nearby eps hold nearly the same outcomes of the same images, not new evidence. Per
  seed, each image's score is its mean survival over the columns, and the same paired machinery
  runs on the scores: a sign test on the images whose scores differ (McNemar's exact test when
  there is one column), the interval from a bootstrap of whole images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, combine_pvalues
from statsmodels.stats.multitest import multipletests

from robench.core.metrics import eps_label
from robench.core.names import markdown_table
from robench.report.worst_case import survived

REPLICATES = 2000
LEVEL = 0.95
ALPHA = 0.05
SEED = 0  # the bootstrap's own generator: the same page twice gives the same intervals


def survival_by_seed(frame: pd.DataFrame, labels, strategy: str, attack: str, eps: float) -> dict[int, np.ndarray]:
    """seed -> the boolean survival of each attacked image, for the ok rows with records of one cell."""
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == attack) & (frame["eps"] == eps)
                 & (frame["status"] == "ok")].drop_duplicates(["seed"], keep="last")
    alive = survived(rows, labels)
    return {int(seed): value for seed, value in zip(rows["seed"], alive) if value is not None}


def _bootstrap_means(matrix: np.ndarray, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per replicate, the mean survival (or score) over seeds drawn with replacement and the given
    image draws: one draw of images for every seed, which attacked the same images."""
    per_seed = per_seed_means(matrix, images)  # (S, B)
    seeds = rng.integers(matrix.shape[0], size=(len(images), matrix.shape[0]))  # (B, S)
    return per_seed[seeds.T, np.arange(len(images))].mean(0)


def per_seed_means(matrix: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(S, B): each seed's mean of ``matrix`` (S, N) over each replicate's image draw (B, N)."""
    n_images = matrix.shape[1]
    counts = np.stack([np.bincount(draw, minlength=n_images) for draw in images])  # (B, N)
    return matrix.astype(float) @ counts.T / n_images


def interval(by_seed: dict[int, np.ndarray]) -> tuple[float, float]:
    """The 95% interval of the mean robust accuracy of one cell (fractions): the bootstrap's, always
    widened to contain the Clopper-Pearson interval of the mean survivor count, which the bootstrap
    cannot reach where every seed kept all or none of the images."""
    matrix = np.stack(list(by_seed.values()))
    rng = np.random.default_rng(SEED)
    images = rng.integers(matrix.shape[1], size=(REPLICATES, matrix.shape[1]))
    low, high = np.quantile(_bootstrap_means(matrix, images, rng), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    exact = binomtest(int(round(matrix.sum(1).mean())), matrix.shape[1]).proportion_ci(LEVEL, method="exact")
    return float(min(low, exact.low)), float(max(high, exact.high))


def with_interval(mean: float, by_seed: dict[int, np.ndarray]) -> str:
    """A table cell: ``mean [low, high]`` in %, the 95% interval of :func:`interval`."""
    low, high = interval(by_seed)
    return f"{100 * mean:.2f} [{100 * low:.1f}, {100 * high:.1f}]"


@dataclass(frozen=True)
class Comparison:
    strategy: str
    reference: str
    column: tuple[str, float]  # (attack, eps)
    difference: float  # strategy minus reference, fraction
    low: float
    high: float
    p: float  # uncorrected
    p_holm: float = float("nan")

    @property
    def significant(self) -> bool:
        """The paired test rejects (Holm) and the interval, which also resamples the seeds, excludes 0:
        a difference one training seed makes (the test conditions on the trained models) is not one."""
        return self.p_holm < ALPHA and (self.low > 0 or self.high < 0)


def compare(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> tuple[float, float, float, float]:
    """(difference a - b, its 95% interval, McNemar's p combined over the seeds both have). The values
    are each image's survival, or a score in [0, 1] (:func:`ranks`): the test is then the sign test."""
    ma, mb = np.stack(list(a.values())), np.stack(list(b.values()))
    rng = np.random.default_rng(SEED)
    images = rng.integers(ma.shape[1], size=(REPLICATES, ma.shape[1]))
    diffs = _bootstrap_means(ma, images, rng) - _bootstrap_means(mb, images, rng)
    low, high = np.quantile(diffs, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    pairs = [(a[seed], b[seed]) for seed in sorted(set(a) & set(b))] or [(ma[0], mb[0])]
    return float(ma.mean() - mb.mean()), float(low), float(high), paired_p(pairs)


def paired_p(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Two-sided p-value of "a and b keep as many images" (of survivals; of scores, "as many images
    score higher under a as under b"): McNemar's exact test for one seed; for
    several, each seed's one-sided exact p-values combined by Stouffer's method in each direction
    (so seeds that point opposite ways cancel instead of adding up), doubled from the smaller."""
    informative = [(x, y) for x, y in pairs if (x != y).any()]  # a seed without discordant images says nothing
    if not informative:
        return 1.0
    if len(informative) == 1:
        return mcnemar(*informative[0])
    sides = [combine_pvalues([_one_sided(x, y, side) for x, y in informative], method="stouffer").pvalue
             for side in ("greater", "less")]
    return float(min(1.0, 2 * min(sides)))


def _one_sided(a: np.ndarray, b: np.ndarray, side: str) -> float:
    only_a, only_b = int((a > b).sum()), int((b > a).sum())
    return binomtest(only_a, only_a + only_b, 0.5, alternative=side).pvalue


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """McNemar's exact test: of the images exactly one model kept, is each side's share 1/2? On
    scores, the sign test: of the images whose scores differ, is the share higher under a 1/2? On
    survivals (True > False) the two are the same test."""
    only_a, only_b = int((a > b).sum()), int((b > a).sum())
    return 1.0 if only_a + only_b == 0 else binomtest(only_a, only_a + only_b, 0.5).pvalue


def against_the_best(frame: pd.DataFrame, labels, strategies: Sequence[str], columns: Sequence[tuple[str, float]],
                     reference: str | None = None, rankable: Collection[str] | None = None) -> list[Comparison]:
    """Every strategy against the best of each column (highest mean) among ``rankable`` (default: all
    of them), or against ``reference`` where it has the column and is rankable; Holm-corrected over
    all. Only a ranked strategy is a reference: against a model that learned nothing, whose constant
    answer no attack changes, every difference would read as a loss of robustness."""
    candidates = set(strategies if rankable is None else rankable)
    found = []
    for attack, eps in columns:
        cells = {s: survival_by_seed(frame, labels, s, attack, eps) for s in strategies}
        cells = {s: c for s, c in cells.items() if c and len({len(v) for v in c.values()}) == 1}
        ranked = [s for s in cells if s in candidates]
        if len(cells) < 2 or not ranked:
            continue
        best = reference if reference in ranked else max(ranked, key=lambda s: np.mean([v.mean() for v in cells[s].values()]))
        for strategy, cell in cells.items():
            if strategy != best:
                found.append(Comparison(strategy, best, (attack, eps), *compare(cell, cells[best])))
    if not found:
        return []
    adjusted = multipletests([c.p for c in found], alpha=ALPHA, method="holm")[1]
    return [Comparison(**{**c.__dict__, "p_holm": float(p)}) for c, p in zip(found, adjusted)]


def paired_section(comparisons: list[Comparison], strategies: Sequence[str], columns: Sequence[tuple[str, float]],
                   notice: str = "") -> str:
    """The page's paired comparisons: a table of differences to each column's best, and in words
    which of them a test supports; ``notice``, a line before the table (a reference not used)."""
    if not comparisons:
        return ""
    by_cell = {(c.strategy, c.column): c for c in comparisons}
    best = {c.column: c.reference for c in comparisons}
    shown = [column for column in columns if column in best]
    table = pd.DataFrame({"strategy": list(strategies), **{
        f"{attack}@{eps_label(eps)}": [_difference(by_cell.get((s, (attack, eps))), s == best[(attack, eps)]) for s in strategies]
        for attack, eps in shown}})
    significant = [c for c in comparisons if c.significant]
    words = ("Differences a test supports (Holm-adjusted p < 0.05, interval excluding 0): " + "; ".join(
        f"{c.strategy} {100 * c.difference:+.1f} points against {c.reference} on {c.column[0]}@{eps_label(c.column[1])} "
        f"(p = {c.p_holm:.2g})" for c in significant) + ". Every other difference in the table is within what the "
        "attacked images and seeds leave open, and is not reported as a difference."
             if significant else
             f"No difference in the table is both significant at 0.05 after Holm's correction over its {len(comparisons)} "
             "comparisons and outside its interval's reach of 0: on these attacked images and seeds no strategy is "
             "shown to be more robust than another.")
    return ("## Paired comparisons\n\n"
            + (notice + "\n\n" if notice else "") +
            "Each cell: robust accuracy (all attacked images) minus that of the column's best ranked strategy, or of "
            "the reference strategy the page was made with (`best`), "
            "in points, with its 95% bootstrap interval; `*` marks a difference whose paired test (McNemar's exact "
            "test on the images one model kept and the other lost, per seed, combined over seeds by Stouffer's method) "
            f"is significant at 0.05 after Holm's correction over all {len(comparisons)} comparisons of the page "
            "and whose interval, which also resamples the training seeds, excludes 0: the test conditions on the "
            "trained models, so a gap one seed's model makes is not taken for the strategy's (docs/protocol.md).\n\n"
            + markdown_table(table) + "\n\n" + words)


def _difference(c: Comparison | None, is_best: bool) -> str:
    if is_best:
        return "best"
    if c is None:
        return "—"
    return f"{100 * c.difference:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}]" + ("*" if c.significant else "")


def scores_by_seed(frame: pd.DataFrame, labels, strategy: str, columns: Sequence[tuple[str, float]]) -> dict[int, np.ndarray]:
    """seed -> each image's survival averaged over ``columns``, for the seeds that have every column.
    The image is the unit: a second column of a nearby eps holds nearly the same outcomes of the same
    images, so one column and that column repeated give the same scores, not twice the evidence."""
    by_column = [survival_by_seed(frame, labels, strategy, attack, eps) for attack, eps in columns]
    seeds = set.intersection(*(set(c) for c in by_column)) if by_column else set()
    return {seed: np.mean([c[seed] for c in by_column], axis=0) for seed in sorted(seeds)}


def separations(frame: pd.DataFrame, labels, strategies: Sequence[str],
                columns: Sequence[tuple[str, float]]) -> tuple[list[str], list[tuple[str, str, float, float]]]:
    """(the strategies with scores on every column, the pairs shown apart as (more robust, less
    robust, difference of mean scores, Holm-adjusted p)). Per pair, :func:`compare` on each image's
    score (scores_by_seed): per seed the sign test on the images whose scores differ (McNemar's
    exact test for one column), seeds combined by Stouffer's method, Holm over the pairs, and the
    interval of the difference of mean scores, from one draw of whole images per replicate for
    every column and both strategies, excluding 0 (:attr:`Comparison.significant`)."""
    cells = {s: scores for s in strategies if (scores := scores_by_seed(frame, labels, s, columns))}
    pairs = [(a, b) for i, a in enumerate(cells) for b in list(cells)[i + 1:]
             if len({len(v) for v in [*cells[a].values(), *cells[b].values()]}) == 1]
    found = [(a, b, *compare(cells[a], cells[b])) for a, b in pairs]  # (a, b, difference, low, high, p)
    adjusted = multipletests([f[5] for f in found], alpha=ALPHA, method="holm")[1] if found else []
    apart = [((a, b) if difference > 0 else (b, a)) + (abs(difference), float(p_holm))
             for (a, b, difference, low, high, _), p_holm in zip(found, adjusted)
             if p_holm < ALPHA and (low > 0 or high < 0)]
    return list(cells), apart


def ranks(frame: pd.DataFrame, labels, strategies: Sequence[str], columns: Sequence[tuple[str, float]]) -> dict[str, int]:
    """Rank with ties: 1 + the number of ``strategies`` shown to be more robust on ``columns`` (the
    headline attack at every eps; :func:`separations`). Strategies no test separates share a rank.
    The caller passes only strategies that may be ranked (robench.report.rankable)."""
    return ranks_from(*separations(frame, labels, strategies, columns))


def ranks_from(scored: Sequence[str], apart: Sequence[tuple[str, str, float, float]]) -> dict[str, int]:
    """The ranks of :func:`separations`' result; a strategy without scores on every column gets none."""
    better = Counter(loser for _, loser, _, _ in apart)
    return {s: 1 + better[s] for s in scored}
