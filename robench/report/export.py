"""A page's table for programs: ``--format md,csv,json`` writes it as CSV and JSON beside the page.

One row per strategy, attack and eps the page shows (the worst case included), in the page's
order, best strategy first: the rank, the mean, sample std and seed count over seeds, and for
robust accuracy the 95% interval of the page (robench.report.uncertainty). Numbers are fractions in
[0, 1], unrounded, so that a reader computes from them instead of from formatted cells. The JSON
also names the page's headline protocol and the runs it was made from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from robench.attack import CLEAN
from robench.core.atomic import replacing
from robench.errors import RobenchError
from robench.report import uncertainty
from robench.report.board import Board
from robench.report.merge import board_frame
from robench.report.summary import DEFAULT_PROTOCOL, attacked_labels, summarise
from robench.report.worst_case import norm_of

FORMATS = ("md", "csv", "json")  # md: the page itself, always written
MODEL = ("clean_acc", "clean_bacc", "attack_clean_acc")  # a model's metrics, repeated on each of its rows
CELL = ("robust_acc", "robust_bacc", "acc_on_correct")


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,csv"`` -> ``("md", "csv")``, refused in one line unless each is one of FORMATS."""
    formats = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not formats or set(formats) - set(FORMATS):
        raise RobenchError(f"--format {text!r}: give md, csv or json, comma-separated, e.g. md,csv,json "
                           "(the markdown page is always written; csv and json add its table beside it)")
    return formats


def table(runs) -> pd.DataFrame:
    """The page's table of one run or several merged (robench.report.merge), one row per strategy x attack x eps."""
    return _table(*board_frame(runs))


def _table(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    board = Board(summarise(frame), frame, config)
    ranks, labels = board.ranks() or {}, attacked_labels(config)
    rows = []
    for strategy in board.strategies:
        model = _stats(board, strategy, MODEL)
        params = board.stats.get((strategy, CLEAN, None, "trainable_params"))
        for attack, eps in board.columns or [(CLEAN, None)]:
            robust = board.stats.get((strategy, attack, eps, "robust_acc"))
            by_seed = uncertainty.survival_by_seed(frame, labels, strategy, attack, eps) if labels and attack != CLEAN else {}
            low, high = (uncertainty.interval(by_seed) if by_seed and len({len(v) for v in by_seed.values()}) == 1
                         else (None, None))
            rows.append({"rank": ranks.get(strategy), "strategy": strategy, "attack": attack,
                         "norm": norm_of(frame, attack) if attack != CLEAN else None, "eps": eps,
                         "seeds": None if robust is None else int(robust.n), **model,
                         **_stats(board, strategy, CELL, attack, eps), "robust_acc_low": low, "robust_acc_high": high,
                         "trainable_params": None if params is None else int(params.mean)})
    return pd.DataFrame(rows)


def write(pages: Sequence[Path], runs, formats: Sequence[str]) -> None:
    """Write ``<page>.csv`` and ``<page>.json`` beside each page, as ``formats`` asks."""
    if not {"csv", "json"} & set(formats):
        return
    frame, config = board_frame(runs)
    rows = _table(frame, config)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")  # NaN -> null
    document = {"protocol": config.get("protocol") or DEFAULT_PROTOCOL, "runs": config.get("runs"),
                "fractions": "every accuracy is a fraction in [0, 1]", "rows": records}
    for page in pages:
        if "csv" in formats:
            with replacing(page.with_suffix(".csv")) as partial:
                spreadsheet_safe(rows).to_csv(partial, index=False)
        if "json" in formats:
            with replacing(page.with_suffix(".json")) as partial:
                partial.write_text(json.dumps(document, indent=1, default=_number) + "\n")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell that a spreadsheet would run as a formula (a strategy, class or
    attack label starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: OWASP's CSV
    injection) prefixed with a quote, which shows it as text. Numbers are left as they are; JSON
    needs none of this."""
    def safe(value):
        return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    return table.apply(lambda column: column.map(safe))


def _number(value):
    """numpy's integers and floats as JSON numbers."""
    return value.item()


def _stats(board: Board, strategy: str, metrics: Sequence[str], attack: str = CLEAN, eps=None) -> dict:
    """Mean and sample std over seeds of each metric of one cell (``<metric>`` and ``<metric>_std``)."""
    found = {}
    for metric in metrics:
        stat = board.stats.get((strategy, attack, eps, metric))
        found[metric], found[f"{metric}_std"] = (None, None) if stat is None else (stat.mean, stat.std)
    return found
