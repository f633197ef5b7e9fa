"""The console sessions of a docs page, run as written: each `$ command` and the output the page shows.

A page's outputs are what a reader compares with their own screen, so they must come from the
robench they describe. ``sessions`` reads them; ``normalised`` masks what differs between two runs
of the same command (wall times, ETA lines); ``rewrite`` puts fresh outputs
into the page (``ROBENCH_UPDATE_DOCS=1 pytest -m slow tests/test_docs_console.py`` regenerates them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Commands whose output is pip's, pytest's or the shell's, not robench's: run or not, never compared.
NOT_COMPARED = ("mkdir", "cd ", "pip ", "python -m pytest")
_TIME = re.compile(r"\b\d+(\.\d+)?( ?(s|min|ms|h))\b")
_TIMING_COLUMNS = ("s/epoch", "train s", "peak MiB")


@dataclass
class Command:
    line: int  # 0-based index of the `$ ` line in the page
    text: str
    output: list[str]  # the lines the page shows under it

    @property
    def compared(self) -> bool:
        return not self.text.startswith(NOT_COMPARED)


def sessions(page: Path) -> list[Command]:
    """Every `$ command` of the page's ```console blocks, with the lines shown under it."""
    commands, inside = [], False
    for number, line in enumerate(page.read_text().splitlines()):
        if line.startswith("```"):
            inside = line == "```console"
            continue
        if not inside:
            continue
        if line.startswith("$ "):
            commands.append(Command(number, line[2:], []))
        elif commands:
            commands[-1].output.append(line)
    return commands


def normalised(lines: list[str]) -> list[str]:
    """``lines`` with wall times, ETA lines and the timing columns of tables masked."""
    kept, masked_columns = [], set()
    for line in lines:
        if "ETA" in line:  # progress lines come at most every 30 s: their number depends on the speed
            continue
        if line.startswith("|"):
            cells = line.split("|")
            if any(c.strip() in _TIMING_COLUMNS for c in cells):
                masked_columns = {i for i, c in enumerate(cells) if c.strip() in _TIMING_COLUMNS}
            elif not set(line) <= set("|:- "):
                cells = [("<t>" if i in masked_columns else c) for i, c in enumerate(cells)]
            line = "|".join(cells)
        kept.append(_TIME.sub("<t>", line))
    return kept


def rewrite(page: Path, outputs: dict[int, list[str]]) -> None:
    """Replace the output under each `$ ` line (by its 0-based line index) with the given lines."""
    lines, fresh, skip = page.read_text().splitlines(), [], False
    for number, line in enumerate(lines):
        if number in outputs:
            fresh.append(line)
            fresh.extend(outputs[number])
            skip = True
            continue
        if skip and (line.startswith("$ ") or line.startswith("```")):
            skip = False
        if not skip:
            fresh.append(line)
    page.write_text("\n".join(fresh) + "\n")
