"""How many attacked images a claim needs: the sample size behind "A is more robust than B".

For two robust accuracies p1 and p2, the number of attacked images at which a two-sided test at
alpha = 0.05 detects the difference with 80% power, from statsmodels' power analysis of two
proportions (Cohen's h, ``NormalIndPower``). robench's paired test (McNemar on the same images)
needs at most this many when the two models tend to keep the same images, as models fine-tuned
from one backbone do; it is the number to plan an ``--attack-samples`` with.

    python -m robench.report.power          # the table quoted in leaderboards/README.md
"""

from __future__ import annotations

import math

from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

ALPHA, POWER = 0.05, 0.8


def images_needed(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Attacked images per model to tell robust accuracies p1 and p2 apart (fractions)."""
    if p1 == p2:
        raise ValueError("p1 and p2 are equal: no sample size detects a difference of zero")
    effect = abs(proportion_effectsize(p1, p2))
    return math.ceil(NormalIndPower().solve_power(effect_size=effect, alpha=alpha, power=power, ratio=1.0))


def table(baselines=(0.02, 0.05, 0.10, 0.20, 0.50), differences=(0.02, 0.05, 0.10, 0.20)) -> str:
    rows = ["| robust acc of B | " + " | ".join(f"A = B + {100 * d:g} pts" for d in differences) + " |",
            "|---|" + "---|" * len(differences)]
    for p in baselines:
        rows.append(f"| {100 * p:g}% | " + " | ".join(str(images_needed(p, p + d)) for d in differences) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(f"Attacked images per model for a two-sided test at alpha {ALPHA} with power {POWER}:\n")
    print(table())
