"""The hostile battery (issue 15): bad numbers, hostile names, edited or damaged run files, a full
disk, unwritable folders, broken plugins and files that are not weights. Each case ends in exactly
one line on stderr and exit status 2 (or a correct run), never a traceback, and changes no file
outside ``--out`` and the leaderboard folder.

Cases run the CLI in-process. The ones that need a finished run share one synthetic run per worker,
copied into each test. Every test works under ``tmp_path/1/2/3/4/5`` with that as the current
directory and snapshots the whole of ``tmp_path`` (minus the two folders a command may write), so a
name such as ``../../../../x`` that escaped would still land inside the snapshot.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import robench
from robench import registry as registry_module
from robench.cli import main
from robench.results import CONFIG_FILE, RESULTS_FILE, read_rows
from robench_plugins.strategies.full import Full
from tests.test_failures import _EntryPoint
from tests.test_resume import REPO, finish, without_timing

BASE = ["--dataset", "synthetic", "--subset", "200", "--epochs", "1", "--seeds", "0", "--attacks", "fgsm", "--eps", "0.01", "--quiet"]
FAST = [*BASE, "--strategies", "linear_probe"]


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One small synthetic run, made once per worker; tests get a copy (see ``place``)."""
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


# --- flags, names and config files: refused before anything is decoded ---------------------------

@pytest.mark.parametrize(("flags", "message"), [
    (["--split-seed", "-1"], "--split-seed -1 is out of range: use a whole number from 0 to 4,294,967,295"),
    (["--seeds", "4294967296"], "--seeds 4294967296 is out of range"),
    (["--seeds", "-3"], "--seeds -3 is out of range"),
    (["--epochs", "100000"], "--epochs 100000 is out of range: use a whole number from 1 to 10,000"),
    (["--image-size", "100000"], "--image-size 100000: robench_vit_micro needs at least"),
    (["--image-size", "30"], "--image-size 30 is not a multiple of robench_vit_micro's patch size 4"),
    (["--image-size", "2"], "--image-size 2 is smaller than robench_vit_micro's patch size 4: use at least 4"),
    (["--threads", "100000"], "--threads 100000 is out of range: use a whole number from 1 to"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--strategies", "full:lr=inf"], "lr must be a finite number > 0"),
    (["--name", "../x"], "--name: '../x' is not a valid name"),
    (["--name", "a/b"], "--name: 'a/b' is not a valid name"),
    (["--name", ".."], "--name: '..' is not a valid name"),
])
def test_a_bad_flag_is_one_line_before_anything_is_written(capsys, place, flags, message):
    refused(capsys, place, message, "run", *FAST, *flags, "--out", place.out, "--leaderboard-dir", place.boards)
    assert not (place.out / RESULTS_FILE).exists()


@pytest.mark.parametrize(("content", "message"), [
    (b'epochs = 1\nname = "caf\xe9"\n', "is not UTF-8 text (byte 0xe9 at position 22): save it as UTF-8"),
    (b'name = "../../x"\n', "--name: '../../x' is not a valid name"),
])
def test_a_hostile_config_file_is_one_line(capsys, place, content, message):
    (place.root / "run.toml").write_bytes(content)
    refused(capsys, place, message, "run", *FAST, "--config", place.root / "run.toml", "--out", place.out)


def test_a_leaderboard_folder_that_is_a_file_is_refused_before_training(capsys, place):
    (place.root / "boards").write_text("not a folder")
    refused(capsys, place, "cannot write to --leaderboard-dir", "run", *FAST, "--out", place.out, "--leaderboard-dir", place.boards)
    assert not (place.out / RESULTS_FILE).exists()  # nothing trained


def test_a_read_only_leaderboard_folder_is_refused_before_training(capsys, place):
    place.boards.mkdir()
    place.boards.chmod(0o555)
    if os.access(place.boards, os.W_OK):
        pytest.skip("this user (root) writes to read-only folders")
    refused(capsys, place, "cannot write to --leaderboard-dir", "run", *FAST, "--out", place.out, "--leaderboard-dir", place.boards)


# --- files of a finished run, edited or damaged -----------------------------------------------------

def _edit_config(place: Place, change) -> None:
    path = place.out / CONFIG_FILE
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _edit_first_row(place: Place, change) -> None:
    path = place.out / RESULTS_FILE
    first, *rest = path.read_text().splitlines(keepends=True)
    path.write_text(change(first) + "".join(rest))


def _without(row_line: str, field: str) -> str:
    row = json.loads(row_line)
    del row[field]
    return json.dumps(row) + "\n"


def _without_recipes(config: dict) -> dict:
    del config["comparable"]["recipes"]
    return config


DAMAGE = {
    "comparable a string": (lambda p: _edit_config(p, lambda c: c | {"comparable": "x"}),
                            "config.json: field comparable must be an object, got 'x'"),
    "config a list": (lambda p: _edit_config(p, lambda c: [c]), "config.json: it must be an object, got [{"),
    "recipes missing": (lambda p: _edit_config(p, _without_recipes), "config.json: field comparable.recipes is missing"),
    "config not UTF-8": (lambda p: (p.out / CONFIG_FILE).write_bytes(b'{"name": "caf\xe9"}'), "config.json is not valid JSON"),
    "seeds not numbers": (lambda p: _edit_config(p, lambda c: c | {"seeds": ["0"]}), "field seeds[0] must be a whole number"),
    "row a JSON list": (lambda p: _edit_first_row(p, lambda line: "[1, 2]\n"), "results.jsonl line 1: it must be an object, got [1, 2]"),
    "row without seed": (lambda p: _edit_first_row(p, lambda line: _without(line, "seed")), "results.jsonl line 1: field seed is missing"),
    "row not UTF-8": (lambda p: (p.out / RESULTS_FILE).write_bytes(b'{"strategy": "caf\xe9"}\n' + (p.out / RESULTS_FILE).read_bytes()),
                      "results.jsonl line 1 is not a JSON row"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.parametrize("command", ["run", "leaderboard"])
def test_a_damaged_run_file_is_one_line_naming_the_file_and_field(capsys, copied, damage, command):
    edit, message = DAMAGE[damage]
    edit(copied)
    rows_before = (copied.out / RESULTS_FILE).read_bytes()
    argv = ["run", *FAST, "--out", copied.out] if command == "run" else ["leaderboard", copied.out]
    refused(capsys, copied, message, *argv, "--leaderboard-dir", copied.boards)
    assert (copied.out / RESULTS_FILE).read_bytes() == rows_before


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_path_as_the_run_name_in_config_json_writes_nothing_outside(capsys, copied, command):
    _edit_config(copied, lambda c: c | {"name": "../../../../x"})
    boards = ["--leaderboard-dir", copied.boards] if command == "leaderboard" else []
    refused(capsys, copied, "config.json: field name: '../../../../x' is not a valid name", command, copied.out, *boards)


def test_a_run_resumed_over_that_name_takes_its_folder_s_name(capsys, copied):
    _edit_config(copied, lambda c: c | {"name": "../../../../x"})
    code, _, err = hostile(capsys, copied, "run", *FAST, "--out", copied.out, "--leaderboard-dir", copied.boards)
    assert code == 0 and err == ""
    assert json.loads((copied.out / CONFIG_FILE).read_text())["name"] == "run" and (copied.boards / "run.md").is_file()


@pytest.mark.parametrize("command", ["leaderboard", "plot"])
def test_a_path_as_name_flag_is_refused(capsys, copied, command):
    refused(capsys, copied, "--name: '../x' is not a valid name", command, copied.out, "--name", "../x")


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
    refused(capsys, copied, "No space left on device: free disk space",
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
    assert code == 1 and err.strip().endswith("robench: 2 cells failed (listed above and in the leaderboard)"), err
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


# --- files that are not weights --------------------------------------------------------------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle payload", "npz"])
def test_a_file_that_is_not_weights_is_refused_with_its_reason_and_never_executed(capsys, place, kind):
    marker = place.top / "executed"
    weights = place.root / ("w.pth" if kind == "pickle payload" else "w.npz")
    if kind == "pickle payload":
        weights.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        np.savez(weights, a=np.zeros(3))
    err = refused(capsys, place, f"weights {weights.name} ", "run", *FAST, "--weights", weights, "--out", place.out)
    assert ": ;" not in err and not err.rstrip().endswith(":")  # a reason is given
    assert not marker.exists()


# --- kill -9 at random moments, many times -----------------------------------------------------------

GRID = [sys.executable, "-m", "robench.cli", "run", "--dataset", "synthetic", "--subset", "200", "--epochs", "2",
        "--strategies", "full,linear_probe", "--attacks", "fgsm,pgd:steps=3", "--eps", "0.01,0.02", "--seeds", "0,1", "--quiet"]


@pytest.mark.slow
def test_twenty_random_kill_9s_then_a_resume_give_the_rows_of_an_uninterrupted_run(tmp_path):
    """A run killed 20 times at random moments (each time resumed by the same command) ends with
    no row twice, no torn line and the very rows of a run never killed."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "ROBENCH_CACHE_DIR": str(tmp_path / "cache")}

    def launch(out: Path) -> subprocess.Popen:
        return subprocess.Popen([*GRID, "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    started = time.monotonic()
    finish(launch(tmp_path / "reference"))
    duration = time.monotonic() - started
    rng, resumed, kills = random.Random(15), tmp_path / "resumed", 0
    for _ in range(20):
        process = launch(resumed)
        try:
            process.wait(timeout=rng.uniform(0, duration))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            kills += process.wait() == -signal.SIGKILL
        else:
            assert process.returncode == 0, process.communicate()[1].decode()[-2000:]
        complete = (resumed / RESULTS_FILE).read_bytes().split(b"\n")[:-1] if (resumed / RESULTS_FILE).exists() else []
        assert all(json.loads(line) for line in complete)  # every finished line is a whole row
    finish(launch(resumed))

    expected, got = read_rows(tmp_path / "reference"), read_rows(resumed)
    assert kills >= 10, f"only {kills} of 20 runs were killed before they finished"
    assert len(expected) == 2 * 2 * (1 + 2 * 2)
    assert len({tuple(r[f] for f in ("strategy", "seed", "attack", "eps")) for r in got}) == len(got)  # no row twice
    assert (resumed / RESULTS_FILE).read_bytes().endswith(b"}\n")
    assert without_timing(got) == without_timing(expected)
