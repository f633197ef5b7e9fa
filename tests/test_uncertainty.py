"""Intervals and paired tests of robust accuracies, on survival vectors with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from robench.core.results import ROW_FIELDS
from robench.report import uncertainty

N = 100


def alive(k: int, n: int = N, offset: int = 0) -> np.ndarray:
    """A survival vector: images offset .. offset + k - 1 survive."""
    v = np.zeros(n, dtype=bool)
    v[offset:offset + k] = True
    return v


def test_an_all_fooled_cell_gets_the_exact_binomial_interval_not_a_point():
    low, high = uncertainty.interval({0: alive(0), 1: alive(0)})
    assert low == 0.0
    assert high == pytest.approx(binomtest(0, N).proportion_ci(0.95, method="exact").high)  # 3.6%, the rule of three


def test_the_interval_holds_the_estimate_and_widens_with_the_seed_spread():
    one = uncertainty.interval({0: alive(20)})
    assert one[0] < 0.2 < one[1]
    assert 0.10 < one[0] < 0.15 and 0.25 < one[1] < 0.32  # about 20 +- 8 points for 100 images
    spread = uncertainty.interval({0: alive(5), 1: alive(20), 2: alive(35)})  # same mean, seeds disagree
    assert spread[0] < one[0] and spread[1] > one[1]


def test_the_interval_always_contains_the_exact_binomial_interval():
    """Not only at 0% or 100%: at 20 of 100 the bootstrap's upper bound (about 28%) is below the
    Clopper-Pearson one (29.2%), and the interval is widened to it."""
    exact = binomtest(20, N).proportion_ci(0.95, method="exact")
    low, high = uncertainty.interval({0: alive(20)})
    assert high == pytest.approx(exact.high) and low <= exact.low


def test_mcnemar_counts_only_the_discordant_images():
    a, b = alive(30), alive(20)  # a keeps 10 images b lost, b keeps none a lost
    assert uncertainty.mcnemar(a, b) == pytest.approx(2 * 0.5 ** 10)
    assert uncertainty.mcnemar(a, a) == 1.0
    # 60 images survive both, 5 only one side each: no evidence of a difference
    assert uncertainty.mcnemar(alive(65), alive(65, offset=5)) == pytest.approx(1.0)


def test_a_paired_difference_combines_the_seeds():
    diff, low, high, p = uncertainty.compare({0: alive(30), 1: alive(32)}, {0: alive(10), 1: alive(12)})
    assert diff == pytest.approx(0.20) and low < 0.20 < high and low > 0
    assert p < 1e-6
    same = uncertainty.compare({0: alive(30)}, {0: alive(30)})
    assert same[0] == 0 and same[3] == 1.0


def _frame(cells: dict[str, list[np.ndarray]], labels: np.ndarray) -> pd.DataFrame:
    rows = []
    for strategy, seeds in cells.items():
        for seed, survival in enumerate(seeds):
            rows.append({"strategy": strategy, "seed": seed, "attack": "pgd", "eps": 0.01, "status": "ok",
                         "adv_pred": np.where(survival, labels, labels + 1).tolist()})
    return pd.DataFrame(rows, columns=list(ROW_FIELDS))


def test_every_strategy_is_compared_with_the_best_and_holm_corrects_the_page():
    labels = np.arange(N) % 3
    frame = _frame({"a": [alive(40), alive(42)], "b": [alive(38), alive(41)], "c": [alive(5), alive(8)]}, labels)
    found = uncertainty.against_the_best(frame, labels, ["a", "b", "c"], [("pgd", 0.01)])
    assert {c.strategy: c.reference for c in found} == {"b": "a", "c": "a"}
    by = {c.strategy: c for c in found}
    assert not by["b"].significant and by["c"].significant
    assert by["c"].p_holm == pytest.approx(min(1.0, 2 * min(c.p for c in found)))  # Holm: smallest p times 2
    section = uncertainty.paired_section(found, ["a", "b", "c"], [("pgd", 0.01)])
    assert "| a " in section and "best" in section and "c -" in section and "*" in section


def test_seeds_that_point_opposite_ways_cancel():
    # seed 0: a keeps 12 images b lost; seed 1: b keeps 12 images a lost. No consistent difference.
    a = {0: alive(30), 1: alive(18)}
    b = {0: alive(18), 1: alive(30)}
    assert uncertainty.mcnemar(a[0], b[0]) < 0.001  # each seed alone looks decisive
    assert uncertainty.compare(a, b)[3] > 0.5
    # the same two seeds agreeing: decisive
    assert uncertainty.compare({0: alive(30), 1: alive(30)}, {0: alive(18), 1: alive(18)})[3] < 1e-4


def test_images_needed_matches_the_textbook_two_proportion_formula():
    from scipy.stats import norm

    from robench.report.power import images_needed

    p1, p2 = 0.10, 0.20
    h = 2 * math.asin(math.sqrt(p2)) - 2 * math.asin(math.sqrt(p1))  # Cohen's h
    expected = math.ceil(2 * ((norm.ppf(0.975) + norm.ppf(0.8)) / h) ** 2)  # var of 2 asin(sqrt p) is 1/n per group
    assert images_needed(p1, p2) == expected
    assert images_needed(0.10, 0.12) > images_needed(0.10, 0.20)
    with pytest.raises(ValueError):
        images_needed(0.1, 0.1)


def test_a_gap_one_training_seed_makes_is_not_reported_as_a_difference():
    """McNemar conditions on the trained models: seed 0 alone keeping 30 images rejects it, but the
    interval, which also draws the seeds, reaches 0, so the difference is not significant."""
    one_seed = {0: np.arange(100) < 30, 1: np.zeros(100, bool), 2: np.zeros(100, bool)}
    none = {seed: np.zeros(100, bool) for seed in range(3)}
    difference, low, high, p = uncertainty.compare(one_seed, none)
    assert p < 1e-6 and low <= 0 < high
    c = uncertainty.Comparison("a", "b", ("pgd", 0.01), difference, low, high, p, p_holm=p)
    assert not c.significant
    every_seed = {seed: np.arange(100) < 30 for seed in range(3)}
    difference, low, high, p = uncertainty.compare(every_seed, none)
    assert uncertainty.Comparison("a", "b", ("pgd", 0.01), difference, low, high, p, p_holm=p).significant
