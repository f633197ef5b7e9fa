"""The rank: the image is its unit, and only a model that learned something, seen on every headline
column in every seed, gets one (robench.report.uncertainty.ranks, robench.report.rankable); per-image records
built by hand with known answers, rendered into real pages."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from robench.core.results import ROW_FIELDS, append_row, write_config
from robench.report import leaderboard, rankable, uncertainty

LABELS = np.array([0] * 30 + [1] * 15 + [2] * 15)  # 60 attacked images, class `a` half of them
N = len(LABELS)
COLUMNS = [("fgsm", 0.01), ("pgd", 0.01), ("fgsm", 0.02), ("pgd", 0.02)]


def alive(k: int, offset: int = 0) -> np.ndarray:
    """Images offset .. offset + k - 1 keep their class."""
    return (np.arange(N) >= offset) & (np.arange(N) < offset + k)


def answers(keep: np.ndarray) -> list[int]:
    """Predictions that are right where ``keep`` and the next class elsewhere."""
    return np.where(keep, LABELS, (LABELS + 1) % 3).tolist()


def model_rows(strategy: str, seed: int, clean: list[int], after: dict[tuple[str, float], list[int] | None]) -> list[dict]:
    """A model's clean row and one row per (attack, eps): its predictions after the attack, None for a failed cell."""
    acc = float(np.mean(np.asarray(clean) == LABELS))
    model = {"strategy": strategy, "seed": seed, "status": "ok", "n_test": N, "n_attacked": N, "clean_acc": acc,
             "attack_clean_acc": acc, "clean_bacc": acc, "majority_acc": 0.5}
    out = [model | {"attack": "none", "attack_name": "none", "eps": 0.0, "robust_acc": acc, "clean_pred": clean}]
    for (attack, eps), preds in after.items():
        cell = model | {"attack": attack, "attack_name": attack, "attack_family": "iterative" if attack == "pgd"
                        else "single-step", "attack_black_box": False, "eps": eps, "attack_seconds": 1.0}
        if preds is None:
            out.append(cell | {"status": "failed", "error": "RuntimeError: out of memory"})
        else:
            robust = float(np.mean(np.asarray(preds) == LABELS))
            out.append(cell | {"robust_acc": robust, "n_clean_correct": round(acc * N), "acc_on_correct": robust / acc,
                               "adv_pred": preds})
    return out


def good(seed: int, shift: int = 0) -> list[dict]:
    """A model right on 54 of 60 images clean, keeping 30, 24, 20, 16 of them under the four columns."""
    kept = {column: answers(alive(k - shift)) for column, k in zip(COLUMNS, (30, 24, 20, 16))}
    return model_rows("good", seed, answers(alive(54)), kept)


def constant(seed: int) -> list[dict]:
    """Always `a`: 50% accuracy, chance balanced accuracy, and no attack changes its answer."""
    return model_rows("constant", seed, [0] * N, {column: [0] * N for column in COLUMNS})


def write_run(path, rows: list[dict], seeds=(0,), strategies=("constant", "good")):
    path.mkdir(parents=True)
    for row in rows:
        append_row(path, row)
    write_config(path, {"name": "t", "strategies": list(strategies), "attacks": ["fgsm", "pgd"], "seeds": list(seeds),
                        "dataset": {"classes": ["a", "b", "c"]},
                        "attacked": {"ids": [f"i{i}" for i in range(N)], "labels": LABELS.tolist()}})
    return path


def main_rows(page: str) -> dict[str, list[str]]:
    """strategy -> the cells of its row in the main table (the first table with a rank column)."""
    table = page.split("## Robust accuracy", 1)[1].split("| rank", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    return {row[1]: row for row in cells}


@pytest.mark.parametrize("seeds", [1, 3])
def test_a_column_repeated_at_another_eps_gives_the_same_test_and_interval(seeds):
    """The issue's case: a 6-image gap. One column and the column copied at a second eps (same
    adv_pred, another eps) give the same p-value and interval; counting the copy's images as new
    ones, as concatenating the columns did, shrinks the p-value."""
    rows = lambda copies: pd.DataFrame([  # noqa: E731
        {"strategy": s, "seed": seed, "attack": "pgd", "eps": 0.01 * (c + 1), "status": "ok",
         "adv_pred": answers(alive(k + seed))} for s, k in (("a", 30), ("b", 24)) for seed in range(seeds)
        for c in range(copies)], columns=list(ROW_FIELDS))
    one = [("pgd", 0.01)]
    two = [("pgd", 0.01), ("pgd", 0.02)]
    single = uncertainty.compare(*(uncertainty.scores_by_seed(rows(1), LABELS, s, one) for s in "ab"))
    copied = uncertainty.compare(*(uncertainty.scores_by_seed(rows(2), LABELS, s, two) for s in "ab"))
    assert single == copied
    if seeds == 1:
        assert single[3] == pytest.approx(2 / 64)  # McNemar's exact test on 6 discordant images, all one way
    concatenated = {s: {seed: np.concatenate([answers(alive(k + seed))] * 2) == np.concatenate([LABELS] * 2)
                        for seed in range(seeds)} for s, k in (("a", 30), ("b", 24))}
    assert uncertainty.compare(concatenated["a"], concatenated["b"])[3] < single[3] / 10  # the pseudo-replication
    assert uncertainty.ranks(rows(1), LABELS, ["a", "b"], one) == uncertainty.ranks(rows(2), LABELS, ["a", "b"], two)


def test_the_rank_separates_a_real_gap_and_ties_close_strategies():
    survival = {"high": (50, 40), "close": (49, 39), "low": (20, 10)}  # images kept at eps 0.01, 0.02
    frame = pd.DataFrame([
        {"strategy": s, "seed": seed, "attack": "pgd", "eps": eps, "status": "ok", "adv_pred": answers(alive(k, seed))}
        for s, ks in survival.items() for seed in (0, 1) for eps, k in zip((0.01, 0.02), ks)], columns=list(ROW_FIELDS))
    ranks = uncertainty.ranks(frame, LABELS, list(survival), [("pgd", 0.01), ("pgd", 0.02)])
    assert ranks == {"high": 1, "close": 1, "low": 3}


def test_a_constant_model_is_not_ranked_not_first_and_not_compared(tmp_path):
    """Its untouchable answers keep 50% of the images, more than any real model here: without the
    rule it would head the table as rank 1."""
    close = [r | {"strategy": "close"} for r in good(0, shift=1)]
    run = write_run(tmp_path / "run", constant(0) + good(0) + close, strategies=("constant", "good", "close"))
    page = leaderboard.render(run)
    rows = main_rows(page)
    assert list(rows) == ["good", "close", "constant"]
    assert rows["constant"][0] == "–" and rows["good"][0] == "1=" and rows["close"][0] == "1="
    assert rows["constant"][4].startswith("50.00")  # worst case@0.01: the highest robust accuracy on the page
    assert ("Not ranked: constant: balanced accuracy 33.3% in seed 0 (95% lower bound 33.3%), not above chance 33.3%; "
            "answers `a` for 100% of the attacked images in seed 0.") in page
    paired = page.split("## Paired comparisons")[1].split("\n## ")[0]
    assert "| constant" not in paired and "| good " in paired
    with_reference = leaderboard.render(run, reference="constant")
    notice = ('The reference constant is not ranked (see "Not ranked" under the main table), so no paired comparison '
              "uses it: each column is compared with its best ranked strategy.")
    assert notice in with_reference
    assert "| constant" not in with_reference.split("## Paired comparisons")[1].split("\n## ")[0]
    alone = write_run(tmp_path / "alone", constant(0) + good(0))  # nothing to compare: the line still says it
    assert notice in leaderboard.render(alone, reference="constant")


def test_a_strategy_missing_a_headline_column_or_a_seed_has_no_rank_and_says_why(tmp_path):
    gap = {column: answers(alive(20)) for column in COLUMNS} | {("pgd", 0.02): None}
    rows = good(0) + good(1) + model_rows("gap", 0, answers(alive(54)), gap)
    rows += model_rows("gap", 1, answers(alive(54)), {column: answers(alive(20)) for column in COLUMNS})
    rows += [r | {"strategy": "short"} for r in good(0, shift=2)]  # seed 0 only
    page = leaderboard.render(write_run(tmp_path / "run", rows, seeds=(0, 1), strategies=("good", "gap", "short")))
    ranks = {strategy: cells[0] for strategy, cells in main_rows(page).items()}
    assert ranks == {"good": "1", "gap": "–", "short": "–"}
    assert "Not ranked: gap: no worst case@0.02 in seed 0 (an attack failed there)." in page
    assert "Not ranked: short: no worst case@0.01 in seed 1 (not run); no worst case@0.02 in seed 1 (not run)." in page
    paired = page.split("## Paired comparisons")[1].split("\n## ")[0]
    assert re.search(r"\| gap +\| [+-]", paired)  # still compared where it has records, against the ranked best
    assert "| good " in paired and "best" in paired.split("| good ")[1].splitlines()[0]


def test_only_a_model_surely_above_chance_and_not_answering_one_class_passes():
    rng = np.random.default_rng(1)
    frame = lambda clean: pd.DataFrame(  # noqa: E731
        [{"strategy": "m", "seed": seed, "attack": "none", "eps": 0.0, "status": "ok", "clean_pred": list(p)}
         for seed, p in enumerate(clean)], columns=list(ROW_FIELDS))
    problem = lambda *clean: rankable.model_problem(frame(clean), LABELS, ["a", "b", "c"], "m")  # noqa: E731
    assert problem(answers(alive(54)), answers(alive(50))) is None
    guessing = problem(answers(alive(54)), rng.integers(3, size=N))  # seed 1 guesses: about chance
    assert re.fullmatch(r"balanced accuracy \d+\.\d% in seed 1 \(95% lower bound \d+\.\d%\), not above chance 33\.3%",
                        guessing)
    nearly = np.zeros(N, int)
    nearly[[44, 58, 59]] = [1, 2, 2]  # one `b` and two `c` images right: balanced accuracy 40%, surely above chance
    assert problem(nearly, answers(alive(54))) == "answers `a` for 95% of the attacked images in seed 0"
    assert problem([0] * N, [0] * N) == ("balanced accuracy 33.3% in seed 0 (95% lower bound 33.3%), 33.3% in seed 1 "
                                         "(95% lower bound 33.3%), not above chance 33.3%; answers `a` for 100% of the "
                                         "attacked images in seed 0, `a` for 100% in seed 1")


def test_the_bound_resamples_within_each_class():
    """Every replicate keeps each class's count: a model right on every `b` and `c` image and on no `a`
    one has balanced accuracy 2/3 in every replicate, so its bound is 2/3 exactly."""
    point, low = rankable.balanced_accuracy_bound({0: np.where(LABELS == 0, 1, LABELS)}, LABELS)
    assert point[0] == pytest.approx(2 / 3) and low[0] == pytest.approx(2 / 3)
    point, low = rankable.balanced_accuracy_bound({0: np.asarray(answers(alive(45)))}, LABELS)  # `c` all wrong
    assert point[0] == pytest.approx(2 / 3) and low[0] == pytest.approx(2 / 3)


def test_a_worst_case_over_fewer_attacks_is_not_ranked_against_the_others_and_says_which(tmp_path):
    """Issue 28: a strategy whose worst case lacks an attack the others ran is kinder, not comparable."""
    extra = [("autoattack", 0.01), ("autoattack", 0.02)]
    full = {column: answers(alive(k)) for column, k in zip(COLUMNS + extra, (30, 24, 20, 16, 22, 14))}
    rows = model_rows("good", 0, answers(alive(54)), full)
    rows += model_rows("partial", 0, answers(alive(54)), {column: answers(alive(k)) for column, k in zip(COLUMNS, (40, 40, 30, 30))})
    page = leaderboard.render(write_run(tmp_path / "run", rows, strategies=("good", "partial")))
    ranks = {strategy: cells[0] for strategy, cells in main_rows(page).items()}
    assert ranks == {"good": "1", "partial": "–"}
    assert ("Not ranked: partial: its worst case@0.01 lacks autoattack in seed 0, which another strategy's includes: "
            "it would be kinder, not comparable; re-run the run's command to complete it; its worst case@0.02 lacks "
            "autoattack in seed 0") in page
    both = model_rows("partial", 0, answers(alive(54)), {column: answers(alive(40)) for column in COLUMNS + extra})
    page = leaderboard.render(write_run(tmp_path / "complete", model_rows("good", 0, answers(alive(54)), full) + both,
                                        strategies=("good", "partial")))
    assert {strategy: cells[0] for strategy, cells in main_rows(page).items()} == {"partial": "1", "good": "2"}
