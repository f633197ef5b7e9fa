"""The main table of a leaderboard page: a run's summary looked up by cell and formatted, and the
order its rows are ranked in."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from functools import cached_property

import pandas as pd

from robench.attack import CLEAN, TRANSFER
from robench.core.metrics import eps_label
from robench.report import rankable, uncertainty
from robench.report.summary import (
    MISSING_CELL,
    UNKNOWN,
    Protocol,
    _attack_columns,
    _ordered,
    attacked_labels,
    model_order,
)
from robench.report.worst_case import WORST, WORST_LABELS

NO_RANK = "–"  # the rank cell of a strategy that may not be ranked (robench.report.rankable)


class Board:
    """The summary of one run, looked up by cell and formatted as table cells."""

    def __init__(self, summary: pd.DataFrame, frame: pd.DataFrame, config: Mapping):
        self.stats = {
            (row.strategy, row.attack, None if pd.isna(row.eps) else row.eps, row.metric): row
            for row in summary.itertuples(index=False)
        }
        self.columns = _attack_columns(frame, [*WORST_LABELS, *(config.get("attacks") or ())])
        seeds = config.get("seeds")
        self.expected_n = len(seeds) if seeds else int(summary["n"].max()) if len(summary) else 1
        self.config = config
        self.frame, self.labels = frame, attacked_labels(config)
        strategies = _ordered(frame["strategy"].dropna(), model_order(config))
        self.not_ranked = (rankable.reasons(frame, self.labels, config.get("dataset", {}).get("classes"), strategies,
                                            self.headline) if self.labels is not None and self.headline
                           else rankable.NotRanked({}, frozenset()))
        self.strategies = ranked(strategies, summary, self.not_ranked.why)

    def cell(self, strategy: str, metric: str, attack: str = CLEAN, eps=None, scale=100.0, digits=2) -> str:
        """``mean ± std`` over seeds, the std left out for one seed, ``(n=k)`` when seeds are missing."""
        stat = self.stats.get((strategy, attack, eps, metric))
        if stat is None:
            return MISSING_CELL
        text = f"{stat.mean * scale:.{digits}f}"
        if stat.n > 1:
            text += f" ± {stat.std * scale:.{digits}f}"
        if stat.n < self.expected_n:
            text += f" (n={stat.n})"
        return text

    def robust_table(self, protocol: Protocol) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "strategy": self.strategies,
                **{
                    f"{attack}@{eps_label(eps)}": [self.robust_cell(s, protocol.metric, attack, eps) for s in self.strategies]
                    for attack, eps in self.columns
                },
            }
        )

    def robust_cell(self, strategy: str, metric: str, attack: str, eps: float) -> str:
        """Robust accuracy over all attacked images with its 95% interval (robench.report.uncertainty) where
        the rows carry per-image records; ``mean ± std`` otherwise and for the other protocol."""
        by_seed = (uncertainty.survival_by_seed(self.frame, self.labels, strategy, attack, eps)
                   if metric == "robust_acc" and self.labels is not None else {})
        stat = self.stats.get((strategy, attack, eps, metric))
        if not by_seed or stat is None or len({len(v) for v in by_seed.values()}) != 1:
            return self.cell(strategy, metric, attack, eps)
        return uncertainty.with_interval(stat.mean, by_seed) + (f" (n={stat.n})" if stat.n < self.expected_n else "")

    def main_table(self, protocol: Protocol) -> pd.DataFrame:
        table = self.robust_table(protocol)
        table.insert(1, "clean acc", [self.cell(s, "clean_acc") for s in self.strategies])
        table.insert(2, "balanced acc", [self.cell(s, "clean_bacc") for s in self.strategies])
        if self.config.get("attack_samples"):
            table.insert(3, "clean acc (attacked)", [self.cell(s, "attack_clean_acc") for s in self.strategies])
        table["trainable params"] = [self.params(s) for s in self.strategies]
        table["s/epoch"] = [self.cell(s, "seconds_per_epoch", scale=1, digits=1) for s in self.strategies]
        table["train s"] = [self.cell(s, "train_seconds", scale=1, digits=0) for s in self.strategies]
        table["peak MiB"] = [self.cell(s, "peak_mem_mb", scale=1, digits=0) for s in self.strategies]
        return table

    @property
    def headline(self) -> list[tuple[str, float]]:
        """The rank's columns: the first attack column's attack (the worst case where there is one) at every eps."""
        return [column for column in self.columns if column[0] == self.columns[0][0]]

    @cached_property
    def separations(self) -> tuple[list[str], list[tuple[str, str, float, float]]] | None:
        """The rankable strategies with scores and the pairs the paired tests set apart under the
        headline columns (uncertainty.separations); None without per-image records or attacks."""
        if self.labels is None or not self.headline:
            return None
        return uncertainty.separations(self.frame, self.labels,
                                       [s for s in self.strategies if s not in self.not_ranked.why], self.headline)

    def ranks(self) -> dict[str, int | None] | None:
        """Each strategy's rank under the headline columns: 1 + the number shown more robust; None for
        a strategy that may not be ranked (robench.report.rankable); None without records or attacks."""
        if self.separations is None:
            return None
        found = uncertainty.ranks_from(*self.separations)
        return {s: found.get(s) for s in self.strategies}

    def rank_cells(self) -> list[str] | None:
        """The `rank` column: ``2``, ``1=`` for a tie, ``–`` for a strategy without a rank (never a tie for first)."""
        if (found := self.ranks()) is None:
            return None
        ties = Counter(rank for rank in found.values() if rank is not None)
        return [NO_RANK if found[s] is None else f"{found[s]}{'=' if ties[found[s]] > 1 else ''}" for s in self.strategies]

    def paired(self, reference: str | None = None) -> str:
        """The paired comparisons section: strategies whose model learned nothing are left out, and each
        column's reference is ranked; a ``reference`` without a rank is not used, and the page says so."""
        if self.labels is None:
            return ""
        compared = [s for s in self.strategies if s not in self.not_ranked.learned_nothing]
        candidates = [s for s in compared if s not in self.not_ranked.why]
        notice = (f"The reference {reference} is not ranked (see \"Not ranked\" under the main table), so no paired "
                  "comparison uses it: each column is compared with its best ranked strategy." if reference in self.not_ranked.why
                  else "")
        found = uncertainty.against_the_best(_without_self_transfer(self.frame), self.labels, compared, self.columns,
                                             reference, candidates)
        return uncertainty.paired_section(found, compared, self.columns, notice) or notice

    def params(self, strategy: str) -> str:
        """Count and share of the backbone: the cost axis of parameter-efficient fine-tuning."""
        trainable = self.stats.get((strategy, CLEAN, None, "trainable_params"))
        if trainable is None:
            return MISSING_CELL
        backbone = self.stats.get((strategy, CLEAN, None, "backbone_params"))
        text = human_count(trainable.mean)
        if backbone is not None and backbone.mean > 0:
            text += f" ({100 * trainable.mean / backbone.mean:.3g}%)"
        return text

    def _n_test(self) -> str:
        """The test set size the rows were evaluated on, else the one the split promised."""
        values = [stat.mean for key, stat in self.stats.items() if key[3] == "n_test"]
        return str(int(values[0]) if values else self.config.get("split", {}).get("n_test", UNKNOWN))

    def denominator(self, protocol: Protocol) -> str:
        subset = self.config.get("attack_samples")
        if subset:
            return f"Denominator: {protocol.subset_denominator.format(n=subset['n'], of=subset['of'])}."
        return f"Denominator: {protocol.denominator.format(n_test=self._n_test())}."

    def legend(self, protocol: Protocol) -> str:
        worst = [label for label in WORST_LABELS if any(attack == label for attack, _ in self.columns)]
        return (
            f"Accuracies in %, mean ± sample std over the run's {self.expected_n} seed(s); "
            + ("robust accuracies over all attacked images as mean [95% interval] over seeds and images "
               "(a two-level bootstrap, docs/protocol.md); " if self.labels is not None else "") +
            f"`(n=k)` marks a cell with only k of them. Attack columns (`attack@eps`, eps in [0, 1] "
            f"pixel units): {protocol.title}. {self.denominator(protocol)} "
            + (f"{' and '.join(f'`{label}@eps`' for label in worst)}: an image counts as robust only if it survives "
               "every attack of that norm run at that eps (per image, not the minimum of the columns; L-inf unless "
               "the label names another norm, and two norms are never combined, their eps being radii of different "
               f"balls); rows are ranked by `{worst[0]}`, averaged over eps. " if worst else "")
            + ("`rank`: 1 + the number of ranked strategies shown to be more robust under the first attack column's "
               "attack at every eps, the image being the unit: per seed, each image's score is its survival averaged "
               "over those eps columns; per pair, a sign test on the images whose scores differ (exact binomial, "
               "McNemar's test for one column) per seed, the seeds combined by Stouffer's method, Holm's correction "
               "over all pairs, and the bootstrap interval of the difference of mean scores (whole images and seeds "
               "resampled) excluding 0; `=` marks strategies no test separates, a tie however their means differ; "
               f"`{NO_RANK}` a strategy not ranked (a model whose clean balanced accuracy is not above chance with "
               f"{100 * rankable.CONFIDENCE:.0f}% confidence or that answers one class for "
               f"{100 * rankable.ONE_CLASS:.0f}% of the images in a seed, or that lacks a rank column's records), listed "
               "with its reason under the table and never a paired comparison's reference. "
               if self.labels is not None else "") +
            "Peak MiB: memory while the model trained: the CUDA allocator's peak on a GPU, "
            "the process's resident memory (sampled) on a CPU."
        )

    def baselines(self) -> str:
        """Majority class and chance, the numbers a collapsed model sits on."""
        majority = {stat.mean for key, stat in self.stats.items() if key[3] == "majority_acc"}
        if not majority:
            majority_text = UNKNOWN
        elif len(majority) == 1:
            majority_text = f"{100 * majority.pop():.2f}% accuracy"
        else:
            majority_text = f"{100 * min(majority):.2f}% to {100 * max(majority):.2f}% accuracy"
        classes = self.config.get("dataset", {}).get("classes")
        chance = f"1/{len(classes)} = {100 / len(classes):.2f}%" if classes else UNKNOWN
        return (
            "Baselines (a model near both has collapsed to one class):\n"
            f"- majority class (always answering the training split's most frequent class): {majority_text}\n"
            f"- chance balanced accuracy (also the majority class's): {chance}"
        )

def _without_self_transfer(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows without a transfer attack's white-box cells (crafted on the model itself): in a transfer
    column they are another threat, so the paired tests of that column compare the black-box cells only."""
    if "attack_family" not in frame or "attack_black_box" not in frame:
        return frame
    return frame[~((frame["attack_family"] == TRANSFER) & (frame["attack_black_box"] == False))]  # noqa: E712


def ranked(strategies: list[str], summary: pd.DataFrame, unranked: Collection[str] = ()) -> list[str]:
    """Best first by the headline number: worst-case robust accuracy over all attacked images,
    averaged over the run's eps (each eps's mean over seeds), the L-inf worst case where there is
    one, else the first norm's (never a mean over norms); models without it keep their order
    after the others, and the ``unranked`` (robench.report.rankable) come last, in that order too, so that
    a constant model's untouchable answers never head the table. Ties keep the command's order."""
    present = [label for label in WORST_LABELS if (summary["attack"] == label).any()]
    worst = summary[(summary["attack"] == (present[0] if present else WORST)) & (summary["metric"] == "robust_acc")]
    score = worst.groupby("strategy")["mean"].mean().to_dict()
    return sorted(strategies, key=lambda s: (s in unranked, -score[s] if s in score else float("inf")))

def human_count(value: float) -> str:
    """5524999 -> 5.5M, 1792 -> 1.8k: a parameter count as people say it."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"
