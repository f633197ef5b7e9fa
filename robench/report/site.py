"""`robench site RUN [RUN ...] --to DIR`: the leaderboard of a run, or of comparable runs merged
(robench.report.merge), as a static website: a folder that opens from file://, with no server and no network.

``index.html`` holds the provenance header, a table a reader sorts and filters in the browser
(strategy, attack, eps, protocol) and the accuracy-vs-eps plots; ``per-class.html`` the per-class
recall under every attack@eps, linked from each row; ``report.html`` the whole markdown page
(paired tests, baselines, both protocols, failed cells). Every number is formatted by the markdown
leaderboard's own code (robench.report.board), so the site and the page never disagree. The stylesheet and the
script are robench's files (robench/report/site_assets), copied beside the pages: nothing is fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

import pandas as pd

from robench import __version__
from robench.core.atomic import replacing
from robench.core.metrics import eps_label
from robench.core.names import refuse_link, visible
from robench.core.results import RESULTS_FILE, run_folder
from robench.errors import RobenchError
from robench.report import corruption_page, flags, leaderboard, merge, page_header, per_class
from robench.report.board import Board
from robench.report.site_table import COLUMNS, PROTOCOL_NAMES, anchor, legend, rows
from robench.report.summary import DEFAULT_PROTOCOL, attacked_labels, summarise
from robench.report.worst_case import with_worst_case

ASSETS = "site_assets"  # package data of robench: the templates, the stylesheet and the script
STATIC = ("site.css", "site.js")
PLOTS = "plots"  # the sub-folder of the PNGs


def write(run_dirs: Sequence[Path], to: Path) -> Path:
    """Write the site of ``run_dirs`` into the folder ``to`` (created if missing; robench's files in
    it are replaced, others left alone) and return the path of its ``index.html``."""
    from robench.report.plots import write_plots  # matplotlib loads only when a site is written

    dirs = _runs(run_dirs)
    raw, config = merge.read_runs(dirs)  # several runs: refused in one line unless comparable
    if raw.empty:
        raise RobenchError(f"no results in {dirs[0] / RESULTS_FILE}: run `robench run --out {dirs[0]}` first")
    to = _folder(to)
    name = merge.page_name(config)
    plots = [(attack, f"{PLOTS}/{file}") for attack, file in write_plots(dirs, [to / PLOTS], name)]
    report = leaderboard.render(dirs, plots=plots)
    leaderboard.write_per_class(dirs, [to], name)
    templates = _templates()
    for file, values in _pages(raw, config, plots, report, csv=f"{name}-per-class.csv").items():
        page = templates.get_template(file).render(name=name, version=__version__, **values)
        with replacing(to / file) as partial:
            partial.write_text(visible(page), encoding="utf-8")
    for file in STATIC:
        with replacing(to / file) as partial:
            partial.write_bytes(files("robench.report").joinpath(ASSETS, file).read_bytes())
    return to / "index.html"


def _pages(raw: pd.DataFrame, config: dict, plots: list, report: str, csv: str) -> dict[str, dict]:
    """What each page's template shows: ``{file: values}``, every text from the markdown page's code."""
    raw = corruption_page.split(raw)[0]  # corruptions: their section of report.html, not the attack table
    labels, dataset = attacked_labels(config), config.get("dataset") or {}
    classes, malignant = dataset.get("classes"), dataset.get("malignant") or ()
    notes, footnotes = flags.annotate(flags.check(raw, n_classes=len(classes) if classes else None, labels=labels))
    frame = with_worst_case(raw, labels)
    board = Board(summarise(frame), frame, config)
    recall = _per_class_tables(board, labels, classes, malignant)
    markdown = _markdown()
    return {
        "index.html": {
            "header": markdown.render(page_header.header(config)), "plots": plots,
            "columns": COLUMNS, "rows": rows(board, notes, set(recall)),
            "filters": _filters(board, config.get("protocol") or DEFAULT_PROTOCOL),
            "legend": markdown.render(legend(board)), "footnotes": markdown.render("\n\n".join(footnotes)),
        },
        "per-class.html": {"tables": recall, "csv": csv, "explanation": markdown.render(per_class.explanation(malignant))},
        "report.html": {"body": markdown.render(report)},
    }


def _runs(run_dirs: Sequence[Path]) -> list[Path]:
    """The run folders, each checked to hold results."""
    return [run_folder(run_dir) for run_dir in merge.run_dirs(run_dirs)]


def _folder(to: Path) -> Path:
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise RobenchError(f"--to {to} is a file: pass a folder (robench creates it if missing)")
    refuse_link(to / PLOTS, "--to")
    try:
        (to / PLOTS).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobenchError(f"cannot create {to} ({exc.strerror or exc}): pass a folder you can write to") from None
    return to


def _filters(board: Board, headline: str) -> list[dict]:
    """The drop-downs above the table: each a row attribute, its choices and the one preselected."""
    attacks = list(dict.fromkeys(attack for attack, _ in board.columns))
    eps = sorted({eps for _, eps in board.columns})
    return [
        {"key": "attack", "label": "attack", "choices": [(a, a) for a in attacks], "selected": "", "any": "every attack"},
        {"key": "eps", "label": "eps", "choices": [(eps_label(e), eps_label(e)) for e in eps], "selected": "",
         "any": "every eps"},
        {"key": "protocol", "label": "protocol", "choices": list(PROTOCOL_NAMES.items()), "selected": headline,
         "any": "both"},
    ]


def _per_class_tables(board: Board, labels, classes, malignant) -> dict[str, tuple[str, str]]:
    """``{anchor: (attack@eps, HTML table)}``: per-class recall under every attack@eps of the run."""
    if labels is None or not classes:
        return {}
    out = {}
    for attack, eps in board.columns:
        table = per_class.recall_table(board.frame, labels, list(classes), board.strategies, attack, eps, malignant)
        if table is not None:
            out[anchor(attack, eps)] = (f"{attack}@{eps_label(eps)}", table.to_html(index=False, border=0))
    return out


def _markdown():
    """CommonMark with tables, raw HTML escaped: the page's text may hold a user's labels."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _templates():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("robench.report", ASSETS), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
