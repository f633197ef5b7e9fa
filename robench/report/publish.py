"""Where a leaderboard page goes, and why a published page is never replaced by another run's unasked.

A run's page lives in its run folder, as ``leaderboard.md`` beside its results, where no other
run writes. ``--leaderboard-dir DIR`` also publishes it as ``DIR/<name>.md`` (how the pages in
leaderboards/ are made), a folder that other runs publish into: two runs whose ``--out`` folders
share a name (``/a/exp``, ``/b/exp``) would write one file. So every written page ends with a
comment naming the run folders it was made from (a hash of each absolute path, not the path), and
a page outside a run's own folder is replaced only by a page made from the same runs or more (a
merge that adds seeds), unless ``force``. Several runs merged without a DIR get a folder of their
own beside the first run, named after the page. No page, whatever its name or DIR, replaces a run's
own config.json or results.jsonl; robench.report.leaderboard claims and writes a page holding the lock
``DIR/.<name>.lock``, so two runs finishing at once do not both pass the claim.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from robench.core.results import CONFIG_FILE, RESULTS_FILE
from robench.errors import RobenchError

PAGE = "leaderboard.md"  # the page in a run's (or a merge's) own folder
WRITTEN_BESIDE = (".md", ".csv", ".json")  # the page and its exports (robench.report.export.FORMATS)
RUN_FILES = (CONFIG_FILE, RESULTS_FILE)  # a run's own files, which no page may replace
_MARKER = "<!-- robench page of runs: {} -->"
_MARKER_LINE = re.compile(r"^<!-- robench page of runs: (.*) -->$", re.MULTILINE)


def run_id(run_dir: Path | str) -> str:
    """A run folder's identity on a page: a short hash of its absolute path."""
    return hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16]


def marker(runs: Sequence[Mapping]) -> str:
    """The comment a written page ends with: ``[name, run_id]`` of each run (a merged config's ``runs``)."""
    entries = json.dumps([[run["name"], run_id(run["dir"])] for run in runs])
    return _MARKER.format(entries.replace(">", "\\u003e"))  # a name holding "-->" must not end the comment


def made_from(page: Path) -> list[tuple[str, str]] | None:
    """``(name, run_id)`` of each run a written page was made from; None for a page without a readable marker."""
    match = _MARKER_LINE.search(page.read_text(errors="replace"))
    try:
        entries = json.loads(match.group(1)) if match else None
    except ValueError:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 2 for e in entries):
        return None
    return [(str(name), str(ident)) for name, ident in entries]


def pages(run_dirs: Sequence[Path], leaderboard_dir: Path | None, name: str) -> list[Path]:
    """Where the page of ``run_dirs`` is written: a run's own folder or, for several runs without a
    ``leaderboard_dir``, a folder ``<name>`` beside the first; and ``<leaderboard_dir>/<name>.md``."""
    dirs = [Path(d) for d in run_dirs]
    own = [dirs[0] / PAGE] if len(dirs) == 1 else [dirs[0].parent / name / PAGE] if leaderboard_dir is None else []
    return own + ([Path(leaderboard_dir) / f"{name}.md"] if leaderboard_dir is not None else [])


def claim(targets: Sequence[Path], run_dirs: Sequence[Path], force: bool = False) -> None:
    """Refuse, before anything is written, to replace a run's own file (a page named ``config`` would
    export ``config.json``) or a page made from a run that ``run_dirs`` do not include."""
    for page in targets:
        for clash in (page.with_suffix(suffix) for suffix in WRITTEN_BESIDE):
            if clash.name in RUN_FILES:
                raise RobenchError(f"a page named {page.stem!r} would write {clash}, the name of a run's own "
                                   f"{clash.name}: pass --name with another name")
    ids = {run_id(d) for d in run_dirs}
    own = {Path(d).resolve() for d in run_dirs}
    runs = ", ".join(map(str, run_dirs))
    for page in targets:
        if force or not page.is_file() or page.parent.resolve() in own:
            continue
        found = made_from(page)
        if found is None:
            raise RobenchError(f"{page} exists and does not say which runs it was made from (an older robench's page, "
                               f"or not robench's): pass --force to replace it with the page of {runs}, or --name NAME "
                               "to publish beside it")
        others = [name for name, ident in found if ident not in ids]
        if others:
            raise RobenchError(f"{page} is the page of another run folder named {', '.join(others)}, not of {runs}: "
                               "pass --force to replace it, or --name NAME to publish beside it")
