"""The leaderboard's escalation section: how many images the escalation took from the configured
attacks' worst case, per strategy and eps (robench.pipeline.escalation computes them).

A reader needs that number next to the worst case: where escalation took several images, the
configured attacks alone would have overstated robustness there (the ``escalation-moved`` flag),
and where it took none after its rounds, a stronger attack was tried and changed nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from robench.attack import ESCALATION
from robench.core.metrics import eps_label
from robench.core.names import markdown_table


def section(frame: pd.DataFrame, strategies: Sequence[str], config: Mapping) -> str:
    """The section's markdown; empty for a run without escalation rows."""
    if "attack_family" not in frame or "escalated" not in frame:
        return ""
    rows = frame[(frame["attack_family"] == ESCALATION) & (frame["status"] == "ok")]
    if rows.empty:
        return ""
    columns = [(attack, eps) for attack in dict.fromkeys(rows["attack"]) for eps in sorted(rows["eps"].unique())]
    table = {"strategy": [s for s in strategies if (rows["strategy"] == s).any()]}
    for attack, eps in columns:
        table[f"{attack}@{eps_label(eps)}"] = [_cell(rows, s, attack, eps) for s in table["strategy"]]
    rounds = (config.get("escalation") or {}).get("rounds")
    return ("## Escalation\n\n"
            "At each eps, the images every L-inf attack left correct were attacked again: PGD on the margin from 2 "
            "random starts, PGD on cross-entropy and APGD-DLR, 50 steps in the first round and twice as many in each "
            f"next one, until a round fooled nothing{f' or {rounds} rounds were run' if rounds else ''} "
            "(robench/pipeline/escalation.py); `escalation[ATTACK]` did the same for a targeted attack, towards its targets. "
            "Each cell: the images escalation fooled of those it was given, summed over seeds, and the rounds it ran. "
            "The worst-case columns count the images it fooled as fooled; the attack columns do not.\n\n"
            + markdown_table(pd.DataFrame(table)))


def _cell(rows: pd.DataFrame, strategy: str, attack: str, eps: float) -> str:
    cell = rows[(rows["strategy"] == strategy) & (rows["attack"] == attack) & (rows["eps"] == eps)]
    if cell.empty:
        return "—"
    fooled, given = int(cell["escalation_fooled"].fillna(0).sum()), int(cell["escalated"].fillna(0).sum())
    rounds = int(cell["escalation_rounds"].fillna(0).max())
    return f"{fooled} of {given}" + (f" ({rounds} round{'s' if rounds != 1 else ''})" if given else "")
