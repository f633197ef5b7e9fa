"""The leaderboard: one markdown page per run, or per set of comparable runs merged
(robench.report.merge), read from their results.jsonl and config.json.

Two steps, kept apart so that plots and sanity-check flags reuse the numbers without the
formatting: ``summarise`` turns rows into a tidy frame of mean, std and seed count per
(strategy, attack, eps, metric); ``render`` turns that frame and the config into markdown.

The page always shows accuracy next to balanced accuracy, the majority-class baseline and
chance, because accuracy alone hides a model that answers the majority class every time; and it
shows both robustness protocols, each with its denominator, because they differ by a factor
of clean accuracy and are easily confused (see FIELD_NOTES.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import pandas as pd
from filelock import FileLock

from robench.core.atomic import replacing
from robench.core.names import markdown_table, visible
from robench.core.results import CONFIG_FILE, RESULTS_FILE
from robench.errors import RobenchError
from robench.report import (
    calibration_page,
    corruption_page,
    escalation_page,
    export,
    flags,
    headline,
    minimal_eps,
    per_class,
    publish,
    rankable,
    transfer_page,
)
from robench.report.board import Board
from robench.report.merge import board_frame, page_name, read_runs, run_dirs
from robench.report.page_header import header
from robench.report.summary import DEFAULT_PROTOCOL, PROTOCOLS, _sentence, attacked_labels, summarise
from robench.report.worst_case import with_worst_case

LEADERBOARD_FILE = publish.PAGE



def render(
    runs: Path | Sequence[Path],
    notes: Mapping[str, str] | None = None,
    footnotes: Sequence[str] | None = None,
    plots: Sequence[tuple[str, str]] | None = None,
    reference: str | None = None,
    name: str | None = None,
) -> str:
    """The markdown leaderboard of one run folder, or of several comparable ones merged (robench.report.merge).

    ``notes`` maps a strategy label to a short marker shown in a last "notes" column, and
    ``footnotes`` are lines printed under the main table. By default both come from the sanity
    checks of ``robench.report.flags``, so every page carries its flags; pass them to show others.
    ``plots`` are ``(attack, file name)`` pairs of PNGs beside the page (robench.report.plots), linked.
    ``reference`` is the strategy the paired comparisons test against (default: the run's
    ``--reference``, else each column's best). ``name``: the page's title (default: the run's name,
    or the merged runs' names joined).
    """
    run_dir = run_dirs(runs)[0]
    frame, config = _read(runs)
    every_row = frame  # the failed cells listed at the end include failed corruption cells
    frame, shifted = corruption_page.split(frame)  # severities in the eps column: kept out of every attack table
    labels = attacked_labels(config)
    protocol_name = config.get("protocol") or DEFAULT_PROTOCOL
    if protocol_name not in PROTOCOLS:
        raise RobenchError(
            f"unknown protocol {protocol_name!r} in {run_dir / CONFIG_FILE}: expected one of {', '.join(PROTOCOLS)}"
        )
    other_name = next(name for name in PROTOCOLS if name != protocol_name)
    if notes is None and footnotes is None:
        classes = config.get("dataset", {}).get("classes")
        notes, footnotes = flags.annotate(flags.check(frame, n_classes=len(classes) if classes else None, labels=labels))
    frame = with_worst_case(frame, labels)
    board = Board(summarise(frame), frame, config)

    main = board.main_table(PROTOCOLS[protocol_name])
    if (rank := board.rank_cells()) is not None:
        main.insert(0, "rank", rank)
    if notes:
        main["notes"] = [notes.get(strategy, "") for strategy in board.strategies]
    reference = reference or config.get("reference")
    if reference is not None and reference not in board.strategies:
        raise RobenchError(f"reference strategy {reference!r} is not in this run: use one of {', '.join(board.strategies)}")
    paired = board.paired(reference)
    dataset = config.get("dataset", {})
    per_class_text = per_class.section(frame, labels, dataset.get("classes"), board.strategies, board.columns,
                                       dataset.get("malignant") or ())
    sections = [
        f"# robench leaderboard: {name or page_name(config)}",
        *([glance] if (glance := headline.section(board, notes or {})) else []),
        header(config),
        f"## {_sentence(PROTOCOLS[protocol_name].title)}",
        _markdown(main),
        board.legend(PROTOCOLS[protocol_name]),
        *([unranked] if (unranked := rankable.section(board.not_ranked)) else []),
        *(footnotes or ()),
        *([paired] if paired else []),
        *([calibrated] if (calibrated := calibration_page.section(board, _markdown)) else []),
        *([transferred] if (transferred := transfer_page.section(board, _markdown)) else []),
        *([corrupted] if (corrupted := corruption_page.section(frame, shifted, labels, config, board.strategies)) else []),
        *([minimal_text] if (minimal_text := minimal_eps.section(frame, board.strategies)) else []),
        *([escalated] if (escalated := escalation_page.section(frame, board.strategies, config)) else []),
        board.baselines(),
        *([per_class_text] if per_class_text else []),
        *([PLOTS] if plots else []),
        f"## Other protocol: {PROTOCOLS[other_name].title}",
        _markdown(board.robust_table(PROTOCOLS[other_name])),
        board.denominator(PROTOCOLS[other_name]),
        _failed_section(every_row),
    ]
    page = inert("\n\n".join(sections) + "\n")  # robench's own markdown is put in after, untouched
    return visible(page.replace(PLOTS, _plots_section(plots)) if plots else page)


PLOTS = "\x00plots\x00"  # where the plot section goes once the rest is made inert


def inert(text: str) -> str:
    """Markdown in which text from data, run files or options cannot fetch or break anything: no raw
    HTML or autolink (a ``<`` before a letter, ``/``, ``!`` or ``?`` written as ``&lt;``), no image (``![`` as ``!\\[``, a remote image being
    a request to another host when the page is viewed); tables keep one line per row
    (robench.core.names.markdown_table). Fenced code (the commands) is left as it is, to be copied:
    its fence is longer than any backquote run inside (robench.core.names.fence). robench's own text
    has neither, so the whole page passes; the plot embeds are added after."""
    out, last = [], 0
    for block in _FENCED.finditer(text):
        out += [_neutral(text[last:block.start()]), block.group(0)]
        last = block.end()
    return "".join([*out, _neutral(text[last:])])


def _neutral(text: str) -> str:
    # only a < that could open a tag, a comment or an autolink: "p < 0.05" stays as written
    return _OPENING.sub("&lt;", text).replace("![", "!\\[")


_OPENING = re.compile(r"<(?=[A-Za-z/!?])")


_FENCED = re.compile(r"^(`{3,})\n.*?^\1$", re.MULTILINE | re.DOTALL)


def write(
    runs: Path | Sequence[Path],
    leaderboard_dir: Path | None = None,
    name: str | None = None,
    notes: Mapping[str, str] | None = None,
    footnotes: Sequence[str] | None = None,
    reference: str | None = None,
    force: bool = False,
    formats: Sequence[str] = ("md",),
) -> Path:
    """Write the page of one run, or of several comparable runs merged, with its accuracy-vs-eps
    plots ``<name>-<attack>.png``, per-class CSV and the exports ``formats`` asks for (robench.report.export)
    beside it: a run's into its folder as ``leaderboard.md``, several runs' into a folder ``<name>``
    beside the first, and with ``leaderboard_dir`` (instead, for several runs) as
    ``<leaderboard_dir>/<name>.md`` (robench.report.publish). A page there made from other runs is refused
    before anything is written, unless ``force``. Returns the path of the last page written.
    """
    from robench.report.plots import write_plots  # matplotlib loads only when a page is written

    dirs = run_dirs(runs)
    config = _read(dirs)[1]  # several runs that cannot share a page, or none with results, are refused here
    name = name or page_name(config)
    pages = publish.pages(dirs, leaderboard_dir, name)
    shared = pages[-1].parent  # --leaderboard-dir when given: other runs publish there too
    publish.claim(pages, dirs, force)  # before a folder is made; again under the lock, which sees the last page
    shared.mkdir(parents=True, exist_ok=True)
    with FileLock(shared / f".{name}.lock"):  # two runs publishing one name: one claims and writes, then the other
        publish.claim(pages, dirs, force)
        folders = [page.parent for page in pages]
        plots = write_plots(dirs, folders, name)
        text = render(dirs, notes=notes, footnotes=footnotes, plots=plots, reference=reference, name=name)
        for page in pages:
            with replacing(page) as partial:
                partial.write_text(text + "\n" + publish.marker(config["runs"]) + "\n")
        export.write(pages, dirs, formats)
        write_per_class(dirs, folders, name)
    return pages[-1]


def _read(runs: Path | Sequence[Path]) -> tuple[pd.DataFrame, dict]:
    """The merged rows and config of ``runs`` (robench.report.merge), refused in one line without results."""
    frame, config = read_runs(runs)
    if frame.empty:
        run_dir = run_dirs(runs)[0]
        raise RobenchError(f"no results in {run_dir / RESULTS_FILE}: run `robench run --out {run_dir}` first")
    return frame, config


def write_per_class(runs: Path | Sequence[Path], out_dirs: Sequence[Path], name: str) -> None:
    """``<name>-per-class.csv``: per-class recall for every strategy and attack@eps, beside the page."""
    frame, config = board_frame(runs)
    labels, dataset = attacked_labels(config), config.get("dataset", {})
    if labels is None or not dataset.get("classes") or frame.empty:
        return
    board = Board(summarise(frame), frame, config)
    table = per_class.tidy(frame, labels, dataset["classes"], board.strategies, board.columns,
                           dataset.get("malignant") or ())
    table = table.round({"clean_recall": 4, "robust_recall": 4, "malignant_to_benign": 4})
    for folder in dict.fromkeys(Path(d).resolve() for d in out_dirs):
        with replacing(folder / f"{name}-per-class.csv") as partial:
            export.spreadsheet_safe(table).to_csv(partial, index=False)


def _plots_section(plots: Sequence[tuple[str, str]]) -> str:
    """Each PNG embedded by a link relative to the page, which is written next to them."""
    from robench.report.plots import CAPTIONS  # loaded already: the plots were drawn

    images = "\n\n".join(CAPTIONS.get(attack, "").format(file=quote(file)) or f"![{_alt(attack)}: accuracy vs eps]({quote(file)})"
                         for attack, file in plots)
    return (
        "## Accuracy vs eps\n\n"
        "One plot per attack under the headline protocol; eps = 0 is the clean model, the band is "
        f"± 1 sample std over seeds. A curve that rises with eps points at a weak or masked attack.\n\n{images}"
    )


def _alt(text: str) -> str:
    """An attack label as an image's alt text: brackets and line breaks would end it early."""
    return inert(" ".join(text.split())).replace("[", "\\[").replace("]", "\\]")


def _failed_section(frame: pd.DataFrame) -> str:
    """Failed cells are shown, not averaged: a missing number must not look like a result."""
    failed = frame[frame["status"] == "failed"]
    if failed.empty:
        return "## Failed cells\n\nNone."
    table = failed[["strategy", "seed", "attack", "eps", "error"]].astype(object).fillna("")
    return "## Failed cells\n\n" + _markdown(table)


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table)
