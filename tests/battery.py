"""What the hostile battery (issue 15; tests/test_battery_inputs.py and tests/test_battery_plugins.py)
shares: the small run it starts, the folders of a case, and the check that a case ends in exactly one
line on stderr and exit status 2 (or a correct run), never a traceback, and changes no file outside
``--out`` and the leaderboard folder.

Cases run the CLI in-process. The ones that need a finished run share one synthetic run per worker,
copied into each test. Every test works under ``tmp_path/1/2/3/4/5`` with that as the current
directory and snapshots the whole of ``tmp_path`` (minus the two folders a command may write), so a
name such as ``../../../../x`` that escaped would still land inside the snapshot. The fixtures are
made visible to every test module by tests/conftest.py.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest

from robench.cli import main

BASE = ["--dataset", "synthetic", "--subset", "200", "--epochs", "1", "--seeds", "0", "--attacks", "fgsm", "--eps", "0.01", "--quiet"]
FAST = [*BASE, "--strategies", "linear_probe"]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One small synthetic run, made once per worker; tests get a copy (see ``copied``)."""
    folder = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.setenv("ROBENCH_QUIET", "1")
        assert main(["run", *FAST, "--out", str(folder / "run")]) == 0
    return folder / "run"


class Place:
    """A test's folders: ``root`` (the current directory), ``out`` and ``boards`` inside it."""

    def __init__(self, tmp_path: Path, monkeypatch):
        self.top = tmp_path
        self.root = tmp_path / "1" / "2" / "3" / "4" / "5"
        self.out, self.boards = self.root / "run", self.root / "boards"
        self.root.mkdir(parents=True)
        monkeypatch.chdir(self.root)

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the test's tmp_path except in ``out`` and ``boards``, with its bytes."""
        allowed = (self.out, self.boards)
        return {str(p.relative_to(self.top)): p.read_bytes() for p in sorted(self.top.rglob("*"))
                if p.is_file() and not any(p == a or a in p.parents for a in allowed)}


@pytest.fixture
def place(tmp_path, monkeypatch) -> Place:
    return Place(tmp_path, monkeypatch)


@pytest.fixture
def copied(place, finished_run) -> Place:
    """A ``place`` whose ``out`` holds a copy of ``finished_run``."""
    shutil.copytree(finished_run, place.out)
    return place


def hostile(capsys, place: Place, *argv: str) -> tuple[int, str, str]:
    """Run the CLI; assert that nothing outside ``out`` and ``boards`` changed and no traceback was
    printed. Warnings count as lines on stderr, as the real command prints them there."""
    before = place.snapshot()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    err += "".join(f"{w.category.__name__}: {w.message}\n" for w in caught if issubclass(w.category, UserWarning))
    assert "Traceback" not in err
    assert place.snapshot() == before, "a file outside --out and the leaderboard folder changed"
    return code, out, err


def refused(capsys, place: Place, message: str, *argv: str) -> str:
    code, _, err = hostile(capsys, place, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("robench: error: "), err
    assert message in err, err
    return err
