"""The top of a page, read in ten seconds: a table of at most ten columns and one paragraph.

Why: the full grid of a real run has 30-odd columns after a few commands (every attack at every
eps, both protocols, timings). A reader first wants who ranks where, on which number, how sure
that is, and which models were left out and why; the grid, the other protocol, per-class recall,
timings and the commands follow below (and in the CSV and the site).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from robench.core.metrics import eps_label
from robench.core.names import markdown_table
from robench.report import calibration_page, minimal_eps
from robench.report.board import Board
from robench.report.summary import MISSING_CELL
from robench.report.worst_case import WORST_LABELS

MOST_EPS = 3  # headline eps columns; with more, the smallest, a middle one and the largest
MOST_COLUMNS = 10  # what a reader takes in at a glance (issue 25); fewer eps columns make room
LISTED_TIES = 6  # unseparated pairs named one by one; past that, counted


def section(board: Board, notes: Mapping[str, str]) -> str:
    """The "At a glance" section: the headline table and what the paired tests support; "" for a page
    without attacks."""
    if not board.headline:
        return ""
    table = table_of(board, notes)
    body = f"## At a glance\n\n{markdown_table(table)}"
    return body + "\n\n" + paragraph(board)


def table_of(board: Board, notes: Mapping[str, str]) -> pd.DataFrame:
    """rank, strategy, clean and balanced accuracy, the headline attack at up to three eps with
    intervals, the median eps* of the first minimal attack, trainable parameters and flags."""
    strategies = board.strategies
    columns: dict[str, list[str]] = {}
    if (rank := board.rank_cells()) is not None:
        columns["rank"] = rank
    columns["strategy"] = list(strategies)
    columns["clean acc"] = [board.cell(s, "clean_acc") for s in strategies]
    columns["balanced acc"] = [board.cell(s, "clean_bacc") for s in strategies]
    minimal = minimal_eps.minimal_attacks(board.frame)
    ece = [calibration_page.clean_ece(board, s) for s in strategies]
    if any(cell is not None for cell in ece):
        columns["clean ECE"] = [cell or MISSING_CELL for cell in ece]
    for attack, eps in shown_eps(board.headline, MOST_COLUMNS - len(columns) - 2 - bool(minimal)):  # params, flags, eps*
        columns[f"{attack}@{eps_label(eps)}"] = [board.robust_cell(s, "robust_acc", attack, eps) for s in strategies]
    if minimal:
        columns["median eps* (×255)"] = [_median(board, s, minimal[0]) for s in strategies]
    columns["trainable params"] = [board.params(s) for s in strategies]
    columns["flags"] = [notes.get(s, "") for s in strategies]
    return pd.DataFrame(columns)


def shown_eps(headline: Sequence[tuple[str, float]], room: int = MOST_EPS) -> list[tuple[str, float]]:
    """The headline columns the table shows: all of up to three (or ``room``, at least one), else the
    smallest, a middle one and the largest eps (with room for two, the smallest and the largest)."""
    most = max(1, min(MOST_EPS, room))
    if len(headline) <= most:
        return list(headline)
    picked = [headline[0], headline[len(headline) // 2], headline[-1]]
    return picked if most == 3 else [headline[0], headline[-1]] if most == 2 else [headline[0]]


def paragraph(board: Board) -> str:
    """What the paired tests support, in words, and which strategies were not ranked and why."""
    attack = board.headline[0][0]
    eps = ", ".join(eps_label(e) for _, e in board.headline)
    number = "the worst case (each image counts if it survives every attack)" if attack in WORST_LABELS else f"`{attack}`"
    parts = [f"Ranked on {number} at eps {eps}, the image as the unit: a strategy is more robust than another only "
             "where a paired test says so (sign tests per seed, Stouffer over seeds, Holm over pairs, and a "
             "bootstrap interval excluding 0; details under the main table)."]
    if board.separations is not None:
        scored, apart = board.separations
        parts.append(_supported(scored, apart))
    if board.not_ranked.why:
        parts.append("Not ranked: " + "; ".join(f"{s} ({why})" for s, why in board.not_ranked.why.items()) + ".")
    return " ".join(parts)


def _supported(scored: Sequence[str], apart: Sequence[tuple[str, str, float, float]]) -> str:
    if len(scored) < 2:
        return "Fewer than two strategies could be ranked, so nothing was compared."
    said = []
    for winner in dict.fromkeys(w for w, _, _, _ in apart):
        beaten = [f"{loser} (+{100 * gap:.1f} points, p = {p:.2g})" for w, loser, gap, p in apart if w == winner]
        said.append(f"{winner} is more robust than {_and(beaten)}")
    separated = {frozenset((w, l)) for w, l, _, _ in apart}
    ties = [(a, b) for i, a in enumerate(scored) for b in scored[i + 1:] if frozenset((a, b)) not in separated]
    if not said:
        return f"No paired test separates the {len(scored)} ranked strategies: none is shown to be more robust than another."
    text = "Shown: " + "; ".join(said) + "."
    if ties and len(ties) <= LISTED_TIES:
        text += " Not shown apart: " + "; ".join(f"{a} and {b}" for a, b in ties) + "."
    elif ties:
        text += f" The other {len(ties)} pairs are not shown apart."
    return text


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _median(board: Board, strategy: str, attack: str) -> str:
    found = minimal_eps.eps_star(board.frame, strategy, attack)
    if found is None:
        return MISSING_CELL
    matrix, eps_max = found
    return minimal_eps.median_text(minimal_eps.median_and_auc(matrix, eps_max)["median"], eps_max)

