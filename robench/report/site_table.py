"""The rows of the website's leaderboard table: one per (strategy, attack@eps, protocol), each cell a
text to show and a number to sort by.

One long table rather than the page's wide one (a column per attack@eps), so that a reader filters
it down to the threat model they care about, as on RobustBench, and sorts any column. The cell
texts are the markdown page's own (robench.report.board), so the site and the page never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from robench.attack import CLEAN
from robench.core.metrics import eps_label
from robench.report.board import Board
from robench.report.summary import PROTOCOLS
from robench.report.worst_case import WORST_LABELS

# How the protocol filter and column name each robench.report.summary.PROTOCOLS entry.
PROTOCOL_NAMES = {"all": "all images", "correct": "clean-correct images"}


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    numeric: bool = False
    higher_first: bool = False  # an accuracy: its first click puts the best on top


COLUMNS = (
    Column("rank", "rank", numeric=True),
    Column("strategy", "strategy"),
    Column("attack", "attack"),
    Column("eps", "eps", numeric=True),
    Column("protocol", "protocol"),
    Column("robust", "robust acc %", numeric=True, higher_first=True),
    Column("clean", "clean acc %", numeric=True, higher_first=True),
    Column("balanced", "balanced acc %", numeric=True, higher_first=True),
    Column("params", "trainable params", numeric=True),
    Column("seeds", "seeds", numeric=True),
    Column("notes", "notes"),  # the sanity flags; the footnotes under the table explain them
    Column("per_class", "per class"),
)


@dataclass(frozen=True)
class Cell:
    text: str
    sort: str = ""  # the number a numeric column sorts by; empty for a missing number, sorted last
    link: str | None = None


def anchor(attack: str, eps: float) -> str:
    """The id of an attack@eps section of the per-class page: ``pgd(steps=20)``, 0.01 -> ``pgd-steps-20-0.01``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", f"{attack} {eps_label(eps)}").strip("-")


def rows(board: Board, notes: Mapping[str, str], per_class: set[str]) -> list[dict]:
    """Every (strategy, attack@eps, protocol) of a run, best strategies first (the page's ranking).

    ``board`` is the run's summary (its rows with their worst-case rows); ``notes`` maps a strategy
    to its sanity flags (robench.report.flags.annotate); ``per_class`` holds the anchors of the per-class
    page, to which a row links.
    """
    out, ranks, shown = [], board.ranks() or {}, board.rank_cells()
    for i, strategy in enumerate(board.strategies):
        model = _model_cells(board, strategy, notes.get(strategy, ""))
        rank = ranks.get(strategy)
        model["rank"] = Cell(shown[i] if shown else "", "" if rank is None else str(rank))
        for attack, eps in board.columns:
            link = anchor(attack, eps)
            for key, protocol in PROTOCOLS.items():
                stat = board.stats.get((strategy, attack, eps, protocol.metric))
                cells = {
                    "strategy": Cell(strategy), "attack": Cell(attack), "eps": Cell(eps_label(eps), f"{eps:g}"),
                    "protocol": Cell(PROTOCOL_NAMES.get(key, key)),
                    "robust": Cell(board.robust_cell(strategy, protocol.metric, attack, eps), _percent(stat)),
                    **model,
                    "per_class": Cell("recall", link=f"per-class.html#{link}") if link in per_class else Cell(""),
                }
                out.append({"strategy": strategy, "attack": attack, "eps": eps_label(eps), "protocol": key,
                            "cells": [(column, cells[column.key]) for column in COLUMNS]})
    return out


def _model_cells(board: Board, strategy: str, notes: str) -> dict[str, Cell]:
    """The cells that describe the trained model, the same in each of its rows."""
    stat = board.stats.get
    trainable = stat((strategy, CLEAN, None, "trainable_params"))
    seeds = stat((strategy, CLEAN, None, "clean_acc"))
    return {
        "clean": Cell(board.cell(strategy, "clean_acc"), _percent(stat((strategy, CLEAN, None, "clean_acc")))),
        "balanced": Cell(board.cell(strategy, "clean_bacc"), _percent(stat((strategy, CLEAN, None, "clean_bacc")))),
        "params": Cell(board.params(strategy), "" if trainable is None else f"{trainable.mean:g}"),
        "seeds": Cell("" if seeds is None else str(seeds.n), "" if seeds is None else str(seeds.n)),
        "notes": Cell(notes),
    }


def _percent(stat) -> str:
    return "" if stat is None or pd.isna(stat.mean) else f"{100 * stat.mean:.4f}"


def legend(board: Board) -> str:
    """What the table's numbers are, as markdown: the page's legend (robench.report.board), cut to these columns."""
    worst = [label for label in WORST_LABELS if any(attack == label for attack, _ in board.columns)]
    return (
        f"Accuracies in %, mean ± sample std over {board.expected_n} seed(s); `(n=k)` marks a number with only k of "
        "them. " + ("A robust accuracy over all images is the mean [95% interval] over seeds and images (a two-level "
                    "bootstrap, docs/protocol.md). " if board.labels is not None else "")
        + "eps: the radius of the attack in [0, 1] pixel units. "
        + " ".join(f"Protocol *{PROTOCOL_NAMES.get(key, key)}*: {protocol.title}. {board.denominator(protocol)}"
                   for key, protocol in PROTOCOLS.items())
        + (f" {' and '.join(f'`{label}`' for label in worst)}: an image counts as robust only if it survives every "
           "attack of that norm at that eps." if worst else "")
        + (" `rank`: 1 + the number of ranked strategies a paired test, each image one unit, shows to be more robust "
           "under the first attack at every eps (as on the markdown page; `=` marks strategies no test separates, `–` "
           "a strategy not ranked, with its reason under the markdown page's table)." if board.labels is not None else "")
        + " Rows start in the markdown page's order; a click on a header sorts by its column, a second click reverses."
    )
