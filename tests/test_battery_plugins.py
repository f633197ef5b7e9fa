"""The hostile battery (issue 15), what robench writes and runs: output folders that are files or
read-only, a full disk, plugins that fail (each alone) and kill -9 at random moments. Each case ends in
exactly one line on stderr and exit status 2 (or a correct run), never a traceback, and changes no
file outside ``--out`` and the leaderboard folder (tests/battery.py says how that is checked).
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import robench
from robench.core.results import RESULTS_FILE, cell_of, read_rows
from robench.pipeline import registry as registry_module
from robench_plugins.strategies.full import Full
from tests.battery import BASE, FAST, hostile, refused
from tests.test_failures import _EntryPoint
from tests.test_resume import REPO, checkpoint_count, finish, kill_when, line_count, without_timing

# --- output folders and a full disk: refused before training, rows kept ------------------------------

def test_a_leaderboard_folder_that_is_a_file_is_refused_before_training(capsys, place):
    (place.root / "boards").write_text("not a folder")
    refused(capsys, place, "cannot write to --leaderboard-dir", "run", *FAST, "--out", place.out, "--leaderboard-dir", place.boards)
    assert not (place.out / RESULTS_FILE).exists()  # nothing trained


def test_a_read_only_leaderboard_folder_is_refused_before_training(capsys, place, monkeypatch):
    """A read-only mount, simulated: opening a file there to write fails as it would (root writes to a
    folder whatever its mode, and CI runs as root)."""
    place.boards.mkdir()
    real_open = io.open

    def read_only_mount(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and place.boards in Path(file).absolute().parents and set(mode) & set("wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", read_only_mount)  # what Path.write_text and Path.open call
    monkeypatch.setattr(builtins, "open", read_only_mount)
    refused(capsys, place, f"cannot write to --leaderboard-dir {place.boards} (Read-only file system): pass a writable folder",
            "run", *FAST, "--out", place.out, "--leaderboard-dir", place.boards)
    assert not (place.out / RESULTS_FILE).exists()  # nothing trained


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_file_where_the_page_s_folder_should_be_is_one_line(capsys, copied, command):
    (copied.root / "boards").write_text("not a folder")
    folder = ["--leaderboard-dir"] if command == "leaderboard" else ["--out"]
    refused(capsys, copied, "a file stands where robench needs a folder", command, copied.out, *folder, copied.boards)


def test_a_full_disk_while_a_plot_is_written_keeps_the_rows_and_leaves_no_partial_file(capsys, copied, monkeypatch):
    real = Figure.savefig

    def disk_full(self, path, **kwargs):
        real(self, path, **kwargs)  # a partial file exists when the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", disk_full)
    rows_before = read_rows(copied.out)
    refused(capsys, copied, ".png): free disk space",  # names the file it could not write
            "run", *FAST, "--out", copied.out, "--leaderboard-dir", copied.boards)
    assert read_rows(copied.out) == rows_before
    assert not [p for p in copied.root.rglob("*") if p.name.endswith(".partial")]


# --- plugins that fail, each alone -------------------------------------------------------------------

class AdaptRaises(Full):
    name = "adapt_raises"

    def adapt(self, model):
        raise RuntimeError("plugin bug in adapt")


class AdaptRaisesInTraining(Full):
    """Adapts the copy robench checks before training, then raises."""

    name = "adapt_later"
    calls = 0

    def adapt(self, model):
        type(self).calls += 1
        if type(self).calls > 1:
            raise RuntimeError("plugin bug in adapt")
        return super().adapt(model)


class StartRaises(Full):
    name = "start_raises"

    def __init__(self):
        raise KeyError("plugin bug in __init__")


class DescribeRaises(Full):
    name = "describe_raises"
    recipe = "not a Recipe"  # what `robench list` describes


class _Strategies:
    @robench.hookimpl
    def register_strategies(self, register):
        for strategy in (AdaptRaises, AdaptRaisesInTraining, StartRaises, DescribeRaises):
            register(strategy)


class _HookRaises:
    @robench.hookimpl
    def register_attacks(self, register):
        raise RuntimeError("plugin bug in register_attacks")


@pytest.fixture
def broken_plugins(monkeypatch):
    real = registry_module.entry_points(group="robench")
    fakes = [_EntryPoint("hostile", "robench-hostile", _Strategies), _EntryPoint("hook", "robench-hook", _HookRaises)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [*real, *fakes])
    monkeypatch.setattr(AdaptRaisesInTraining, "calls", 0)
    registry_module._load_registry.cache_clear()
    yield
    registry_module._load_registry.cache_clear()


@pytest.mark.parametrize(("strategy", "message"), [
    ("adapt_raises", ("strategy adapt_raises (package robench-hostile) cannot adapt backbone robench_vit_micro "
                      "(RuntimeError: plugin bug in adapt)")),
    ("start_raises", "strategy 'start_raises' from package 'robench-hostile' failed to start (KeyError: 'plugin bug in __init__')"),
])
def test_a_strategy_that_raises_is_one_line_naming_its_package(capsys, place, broken_plugins, strategy, message):
    refused(capsys, place, message, "run", *BASE, "--strategies", strategy, "--out", place.out, "--leaderboard-dir", place.boards)


def test_adapt_raising_in_training_fails_its_cells_naming_the_package_and_the_others_complete(capsys, place, broken_plugins):
    code, _, err = hostile(capsys, place, "run", *BASE, "--strategies", "adapt_later,linear_probe", "--out", place.out,
                           "--leaderboard-dir", place.boards)
    assert code == 1 and err.strip().endswith("robench: 3 cells failed (listed above and in the leaderboard)"), err
    rows = {r["strategy"]: r for r in read_rows(place.out) if r["attack"] == "none"}
    assert rows["adapt_later"]["status"] == "failed" and rows["linear_probe"]["status"] == "ok"
    assert rows["adapt_later"]["error"] == ("PluginError: strategy adapt_later (package robench-hostile) failed in adapt "
                                            "(RuntimeError: plugin bug in adapt)")


def test_list_shows_every_plugin_and_the_failures(capsys, place, broken_plugins):
    code, out, err = hostile(capsys, place, "list")
    assert code == 0 and err == ""
    for name in ("full", "fgsm", "pgd", "adapt_raises", "start_raises"):
        assert f"  {name} " in out
    assert "plugin 'hook' from package 'robench-hook' failed to load: RuntimeError: plugin bug in register_attacks" in out
    assert ("describe_raises  from package 'robench-hostile': broken, cannot describe itself "
            "(TypeError: asdict() should be called on dataclass instances)") in out


# --- kill -9 at many points of a run --------------------------------------------------------------------

GRID = [sys.executable, "-m", "robench.cli", "run", "--dataset", "synthetic", "--subset", "200", "--epochs", "2",
        "--strategies", "full,linear_probe", "--attacks", "fgsm,pgd:steps=3", "--eps", "0.01,0.02", "--seeds", "0,1", "--quiet"]


def progress(out: Path) -> int:
    """How far a run has come, one file operation at a time: its complete rows plus its checkpoints."""
    return line_count(out) + checkpoint_count(out)


@pytest.mark.slow
def test_twenty_kill_9s_at_random_points_then_a_resume_give_the_rows_of_an_uninterrupted_run(tmp_path):
    """A run killed at 20 points of its progress drawn at random (after its n-th row or checkpoint,
    watched on disk, not timed: the host's speed does not move a kill), each time resumed by the same
    command, ends with no row twice, no torn line and the very rows of a run never killed; after every
    kill the finished rows are whole, are the uninterrupted run's, and were kept byte for byte."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ROBENCH_CACHE_DIR": str(tmp_path / "cache")}

    def launch(out: Path) -> subprocess.Popen:
        return subprocess.Popen([*GRID, "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    finish(launch(reference))
    expected = read_rows(reference)
    by_cell = dict(zip(map(cell_of, expected), without_timing(expected)))
    # 20 of the reference's progress points (its rows and 4 checkpoints), each before the last: work is left there
    points = sorted(random.Random(15).sample(range(1, progress(reference)), 20))
    landed, kept = [], b""
    for point in points:
        if progress(resumed) >= point:
            continue  # an earlier kill landed past this point (rows of one attack are written together)
        if kill_when(launch(resumed), lambda point=point: progress(resumed) >= point):
            landed.append(point)
        text = (resumed / RESULTS_FILE).read_bytes() if (resumed / RESULTS_FILE).exists() else b""
        complete = text[: text.rfind(b"\n") + 1]
        assert complete.startswith(kept)  # a resume keeps every finished row as it was written
        kept, rows = complete, read_rows(resumed)
        assert len(rows) == complete.count(b"\n") and progress(resumed) >= point  # whole rows; the kill came after its point
        assert [by_cell[cell_of(row)] for row in rows] == without_timing(rows)  # the uninterrupted run's numbers
    finish(launch(resumed))

    got = read_rows(resumed)
    # the first point always has a run to kill, long before its end
    assert landed and landed[0] == points[0], f"kills landed at {landed} of points {points}"
    assert len(set(map(cell_of, expected))) == len(expected) >= 2 * 2 * (1 + 2 * 2) and {r["status"] for r in expected} == {"ok"}
    assert progress(reference) == len(expected) + 2 * 2  # a checkpoint per (strategy, seed)
    assert len(set(map(cell_of, got))) == len(got)  # no row twice
    assert (resumed / RESULTS_FILE).read_bytes().endswith(b"}\n") and (resumed / RESULTS_FILE).read_bytes().startswith(kept)
    assert without_timing(got) == without_timing(expected)
