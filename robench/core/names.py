"""Run and leaderboard names: names, never paths.

A name becomes file names (``<name>.md``, ``<name>-pgd.png``) inside the folder the user named.
One that holds a separator or ``..`` (``../../x``, typed or edited into config.json) would
write outside it, so a name given by the user or read from a file is checked here, wherever it
comes from; one robench makes up itself (from the --out folder's name, or from the dataset and
backbone) is turned into a valid one instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from robench.errors import RobenchError

_VALID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_LENGTH = 120  # file names: the page's name plus an attack's slug stays under the usual 255 bytes


def check_name(name: str, where: str) -> str:
    """``name`` if it is a valid name, else one line saying why, naming where it came from."""
    if isinstance(name, str) and _VALID.fullmatch(name) and ".." not in name and len(name) <= MAX_LENGTH:
        return name
    raise RobenchError(f"{where}: {name!r} is not a valid name: use letters, digits and - _ . "
                       f"(no '..', no / or \\, at most {MAX_LENGTH} characters), e.g. ham10000-vit-base")


def name_from(text: str) -> str:
    """A valid name made from any text (a folder's name, ``dataset-backbone-time``): each run of
    other characters becomes ``-``; ``..`` becomes ``.``."""
    name = re.sub(r"\.{2,}", ".", _INVALID_RUN.sub("-", text)).strip("-.")[:MAX_LENGTH].strip("-.")
    return name if name and _VALID.fullmatch(name) else "run"


def refuse_link(path: Path, flag: str) -> None:
    """One line if ``path`` is a symbolic link: writing through it would change a file outside ``flag``'s folder."""
    if Path(path).is_symlink():
        raise RobenchError(f"{path} is a symbolic link: robench writes only inside {flag}; replace it by the file or "
                           f"folder itself, or pass another {flag}")


def file_in(folder: Path, file_name: str) -> Path:
    """``folder / file_name``, refused unless that is a file directly inside ``folder``: the last
    guard that a page or a plot is never written anywhere else."""
    if file_name in ("", ".", "..") or "/" in file_name or "\\" in file_name:
        raise RobenchError(f"{file_name!r} would be written outside {folder}: give the page a name of letters, digits and - _ .")
    return Path(folder) / file_name


# Characters that reorder or hide the text around them (bidirectional overrides and isolates, marks):
# a class named with U+202E shows its name backwards, and whatever follows it too.
_DIRECTIONAL = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with every directional control written as its escape (``\\u202e``): a page shows what the
    data holds, in the order it holds it. robench's own words have none, so a whole page can pass."""
    return _DIRECTIONAL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def fence(text: str) -> str:
    """A markdown code fence longer than any run of backquotes in ``text``, so that ``text`` cannot close it."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    return "`" * max(3, longest + 1)


BF16_TWIN = "[bf16]"  # the suffix of a bf16 attack computed beside its fp32 twin (robench.report.flags compares them)


def markdown_table(table) -> str:
    """A pandas DataFrame of formatted cells as a markdown table, one line per row whatever its cells
    hold: a ``|`` from data or run files escaped, a line break a space (either would cut the row).
    Number parsing is off: it would turn "70.00" into "70"."""
    def cell(value):
        return " ".join(value.split()).replace("|", "\\|") if isinstance(value, str) else value

    cells = table.map(cell)
    cells.columns = [cell(str(column)) for column in cells.columns]
    return cells.to_markdown(index=False, disable_numparse=True)
