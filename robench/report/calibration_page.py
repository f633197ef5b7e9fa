"""The page's calibration section: each model's expected calibration error, clean and under each attack.

An attack that leaves a model's accuracy alone can still make it confidently wrong; a clinician
reading the probability needs to know. The rows carry ECE and NLL (robench.pipeline.calibration);
this shows the ECE, mean ± std over seeds, with the NLL named for where to find it.
"""

from __future__ import annotations

import pandas as pd

from robench.attack import CLEAN
from robench.core.metrics import eps_label
from robench.report.worst_case import WORST_LABELS


def table(board) -> pd.DataFrame | None:
    """strategy, clean ECE, then ECE under each attack@eps that measured it (in %); None for rows without any."""
    measured = [(attack, eps) for attack, eps in board.columns if attack not in WORST_LABELS and (any(
        (s, attack, eps, "ece") in board.stats and not pd.isna(board.stats[(s, attack, eps, "ece")].mean) for s in board.strategies))]
    if clean_ece(board, board.strategies[0] if board.strategies else None) is None and not measured:
        return None
    columns = {"strategy": list(board.strategies), "clean": [board.cell(s, "clean_ece") for s in board.strategies]}
    for attack, eps in measured:
        columns[f"{attack}@{eps_label(eps)}"] = [_cell(board, s, attack, eps) for s in board.strategies]
    return pd.DataFrame(columns)


def clean_ece(board, strategy: str | None) -> str | None:
    """The headline's `clean ECE` cell of a strategy; None where the rows carry no ECE (older runs)."""
    stat = board.stats.get((strategy, CLEAN, None, "clean_ece"))
    return None if stat is None or pd.isna(stat.mean) else board.cell(strategy, "clean_ece")


def section(board, markdown) -> str | None:
    found = table(board)
    if found is None:
        return None
    return ("## Calibration\n\n" + markdown(found) + "\n\nExpected calibration error in % (top-label, 15 equal-width "
            "confidence bins, Guo et al. 2017; lower is better), mean ± std over seeds: the clean column over all test "
            "images, an attack's over the attacked images after the attack (an image wrong on clean keeps its clean answer). "
            "The mean negative log-likelihood of the true class is the `nll` of each row in results.jsonl.")


def _cell(board, strategy: str, attack: str, eps: float) -> str:
    return board.cell(strategy, "ece", attack, eps)
