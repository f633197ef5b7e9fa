"""Runs that survive: resume after a kill, no cell twice, settings that must match, one writer.

The kill test runs the real command in a subprocess and kills it with SIGKILL at several
points; the others run the CLI in-process and count how often a model trains.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from filelock import FileLock

import robench.pipeline.model_job
from robench.cli import main
from robench.core import results
from robench.core.results import RESULTS_FILE, append_row, drop_torn_tail, read_rows
from robench.pipeline.resume import LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
TIMING = ("train_seconds", "seconds_per_epoch", "attack_seconds", "peak_mem_mb")
FAST = ["--dataset", "synthetic", "--subset", "200", "--epochs", "2", "--seeds", "0", "--quiet"]


def without_timing(rows: list[dict]) -> list[str]:
    """Rows minus timing columns, as JSON text: a NaN metric (no clean-correct image) compares equal."""
    return [json.dumps({k: v for k, v in row.items() if k not in TIMING}, sort_keys=True) for row in rows]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def train_calls(monkeypatch) -> list[str]:
    """The label of every model the runner trains."""
    calls = []
    real = robench.pipeline.model_job.train

    def counting(*args, label="", **kwargs):
        calls.append(label)
        return real(*args, label=label, **kwargs)

    monkeypatch.setattr(robench.pipeline.model_job, "train", counting)
    return calls


# --- the results file -------------------------------------------------------------------------

def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    append_row(tmp_path, {"strategy": "a", "seed": 0, "attack": "none", "eps": 0.0, "status": "ok"})
    with open(tmp_path / RESULTS_FILE, "ab") as f:
        f.write(b'{"strategy": "b", "se')  # a write cut short by a crash
    assert [r["strategy"] for r in read_rows(tmp_path)] == ["a"]

    assert drop_torn_tail(tmp_path) == len(b'{"strategy": "b", "se')
    append_row(tmp_path, {"strategy": "c", "seed": 0, "attack": "none", "eps": 0.0, "status": "ok"})
    assert [r["strategy"] for r in read_rows(tmp_path)] == ["a", "c"]  # c is not glued onto the torn line
    assert drop_torn_tail(tmp_path) == 0


def test_a_damaged_line_in_the_middle_is_one_clear_error(capsys, tmp_path):
    out_dir = tmp_path / "run"
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--out", str(out_dir),
            "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    lines = (out_dir / RESULTS_FILE).read_text().splitlines(keepends=True)
    (out_dir / RESULTS_FILE).write_text(lines[0] + "not json\n" + "".join(lines[1:]))
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and "results.jsonl line 2 is not a JSON row" in err


# --- kill -9 at any moment --------------------------------------------------------------------

COMMAND = [sys.executable, "-m", "robench.cli", "run", "--dataset", "synthetic", "--subset", "200", "--epochs", "2",
           "--strategies", "full,linear_probe", "--attacks", "fgsm", "--eps", "0.01,0.02", "--seeds", "0", "--quiet"]


def start(out_dir: Path, tmp_path: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([*COMMAND, "--out", str(out_dir), "--leaderboard-dir", str(tmp_path / "boards")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_when(process: subprocess.Popen, ready) -> bool:
    """SIGKILL the process as soon as ``ready()`` holds; False if it finished before that. No time
    limit: ``ready`` watches what the run wrote, which a slow host reaches later, never not at all."""
    while not ready():
        if process.poll() is not None:
            assert process.returncode == 0, process.communicate()[1].decode()[-2000:]
            return False
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    if process.wait() != -signal.SIGKILL:  # it finished between the last look and the signal
        assert process.returncode == 0, process.communicate()[1].decode()[-2000:]
        return False
    return True


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-2000:]


def line_count(out_dir: Path) -> int:
    path = out_dir / RESULTS_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


def checkpoint_count(out_dir: Path) -> int:
    return len(list((out_dir / "checkpoints").glob("*.safetensors")))


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_kill_9_at_several_points_then_the_same_command_gives_the_uninterrupted_rows(tmp_path):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    uninterrupted = start(reference, tmp_path)
    # Killed just after the first row is on disk (the second model not trained yet) ...
    assert kill_when(start(resumed, tmp_path), lambda: line_count(resumed) >= 1)
    first = read_rows(resumed)
    assert 1 <= len(first) < 10  # a model's 5 rows: clean, fgsm and the escalation at 2 eps
    # ... then mid-way, once the second model is trained and saved, leaving a torn line behind.
    # (On a loaded machine the run may finish before this point: then the last run has nothing to do.)
    kill_when(start(resumed, tmp_path), lambda: checkpoint_count(resumed) >= 2)
    with open(resumed / RESULTS_FILE, "ab") as f:
        f.write(b'{"strategy": "linear_probe", "seed": 0, "att')
    finish(start(resumed, tmp_path))
    finish(uninterrupted)

    expected, got = read_rows(reference), read_rows(resumed)
    assert len(expected) == 2 * (1 + 2 + 2) and {r["status"] for r in expected} == {"ok"}  # clean, fgsm and escalation at 2 eps
    assert without_timing(got) == without_timing(expected)  # none lost, none twice, same numbers
    assert json.dumps(got[: len(first)]) == json.dumps(first)  # finished rows were kept as they were, timings included
    assert (resumed / RESULTS_FILE).read_bytes().endswith(b"}\n")


# --- resume and extend ------------------------------------------------------------------------

@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_the_same_command_again_redoes_nothing(capsys, tmp_path, train_calls):
    argv = ["run", *FAST, "--strategies", "full,linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    assert train_calls == ["full seed 0", "linear_probe seed 0"]
    before = (tmp_path / "run" / RESULTS_FILE).read_bytes()

    code, _, _ = run_cli(capsys, *argv[:-4], "--leaderboard-dir", str(tmp_path), "--out", str(tmp_path / "run"))
    assert code == 0 and len(train_calls) == 2
    assert (tmp_path / "run" / RESULTS_FILE).read_bytes() == before


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_partial_files_a_killed_run_left_are_removed_when_it_resumes(capsys, tmp_path):
    out_dir = tmp_path / "run"
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(out_dir), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    left = [out_dir / ".results.jsonl.9.partial", out_dir / "checkpoints" / ".x.safetensors.9.partial",
            out_dir / "features" / ".x.safetensors.9.partial"]
    for path in left:
        path.write_bytes(b"half")
    assert run_cli(capsys, *argv)[0] == 0
    assert not [path for path in left if path.exists()]


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_an_extra_attack_eps_and_seed_extend_the_run_without_retraining(capsys, tmp_path, train_calls, monkeypatch):
    out_dir = tmp_path / "run"
    common = [*FAST[:-3], "--quiet", "--strategies", "full,linear_probe", "--out", str(out_dir), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, "run", *common, "--attacks", "fgsm", "--eps", "0.01", "--seeds", "0")[0] == 0
    first = read_rows(out_dir)
    assert len(train_calls) == 2

    code, _, err = run_cli(capsys, "run", *common, "--attacks", "fgsm,pgd:steps=2", "--eps", "0.01,0.02", "--seeds", "0")
    assert code == 0, err
    assert len(train_calls) == 2  # the two models came from their checkpoints
    rows = read_rows(out_dir)
    assert json.dumps(rows[: len(first)]) == json.dumps(first)
    added = rows[len(first):]
    assert {(r["attack"], r["eps"]) for r in added} == {("fgsm", 0.02), ("pgd(steps=2)", 0.01), ("pgd(steps=2)", 0.02),
                                                       ("escalation", 0.02)}  # escalation@0.01 was done: not again
    model_facts = ("clean_acc", "clean_bacc", "n_test", "trainable_params", "epochs", "best_epoch", "train_seconds", "peak_mem_mb")
    for row in added:  # identical clean metrics and the stored training facts, timings included
        clean = next(r for r in first if r["strategy"] == row["strategy"])
        assert json.dumps({k: row[k] for k in model_facts}) == json.dumps({k: clean[k] for k in model_facts})

    # A new seed trains only the new models; config.json and the leaderboard cover everything.
    assert run_cli(capsys, "run", *common, "--attacks", "fgsm", "--eps", "0.01", "--seeds", "1")[0] == 0
    assert train_calls[2:] == ["full seed 1", "linear_probe seed 1"]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["attacks"] == ["fgsm", "pgd(steps=2)"] and config["eps"] == [0.01, 0.02] and config["seeds"] == [0, 1]
    assert config["command"].count("robench run") == 3
    board = (tmp_path / "run.md").read_text()
    assert "pgd(steps=2)@0.02" in board and "0, 1" in board


def test_extending_by_eps_matches_a_fresh_run_of_the_same_command(capsys, tmp_path):
    """Attacks with random starts: rows added to a run equal those a fresh run of the command writes."""
    # One tiny step from a random start: the random start decides most of the result.
    common = [*FAST, "--strategies", "full", "--lr", "1e-4",  # a model the random start fools on some images
              "--attacks", "pgd:steps=1:alpha=0.001", "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, "run", *common, "--eps", "0.1", "--out", str(tmp_path / "extended"))[0] == 0
    assert run_cli(capsys, "run", *common, "--eps", "0.1,0.2", "--out", str(tmp_path / "extended"))[0] == 0
    assert run_cli(capsys, "run", *common, "--eps", "0.1,0.2", "--out", str(tmp_path / "fresh"))[0] == 0
    extended, fresh = read_rows(tmp_path / "extended"), read_rows(tmp_path / "fresh")
    assert sorted(without_timing(extended)) == sorted(without_timing(fresh))  # the escalation follows each eps's attacks
    pgd = next(r for r in fresh if r["attack_name"] == "pgd" and r["eps"] == 0.2)
    assert 0 < pgd["robust_acc"] < pgd["clean_acc"]


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_a_checkpoint_that_does_not_fit_is_retrained(capsys, tmp_path, train_calls):
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("*.safetensors")
    checkpoint.write_bytes(b"garbage")
    assert run_cli(capsys, *argv[:-1], str(tmp_path), "--eps", "0.01,0.02")[0] == 0
    assert train_calls == ["linear_probe seed 0", "linear_probe seed 0"]
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 5 and rows[-1]["clean_acc"] == rows[0]["clean_acc"]  # clean, fgsm and escalation at 2 eps


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_a_new_plugin_version_gets_its_own_checkpoint_and_is_not_mixed_into_old_rows(capsys, tmp_path, train_calls,
                                                                                     monkeypatch):
    """Plugin provenance: a checkpoint key names the strategy's version, and a run folder refuses
    rows of a plugin at another version than the one that wrote its earlier rows."""
    from robench.pipeline.fingerprint import model_key
    from robench.pipeline.registry import Plugin

    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["comparable"]["plugins"]["strategy linear_probe"] == f"robench {Plugin.version.fget(_builtin('linear_probe'))}"
    installed = Plugin.version.fget(_builtin("linear_probe"))
    real = Plugin.version
    monkeypatch.setattr(Plugin, "version", property(lambda self: "9.9" if self.name == "linear_probe" else real.fget(self)))
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1
    assert f"holds results of strategy linear_probe from robench {installed}, this robench has robench 9.9" in err
    assert train_calls == ["linear_probe seed 0"]
    code, _, err = run_cli(capsys, *argv[:-4], "--out", str(tmp_path / "fresh"), "--leaderboard-dir", str(tmp_path))
    assert code == 0, err
    old, new = (json.loads((tmp_path / d / "config.json").read_text())["comparable"] for d in ("run", "fresh"))
    assert new["plugins"]["strategy linear_probe"] == "robench 9.9"
    strategy = SimpleNamespace(label="linear_probe", plugin=SimpleNamespace(name="linear_probe"), defense=None)
    prepared = SimpleNamespace(images=SimpleNamespace(ids=["a"], labels=[0]), split=SimpleNamespace(train=[0], val=[0]),
                               dataset=SimpleNamespace(name="synthetic"))
    assert model_key(old, strategy, 0, prepared)["plugin_version"] != model_key(new, strategy, 0, prepared)["plugin_version"]


def _builtin(name):
    from robench.pipeline.registry import load_registry

    return load_registry().get("strategy", name)


@pytest.mark.parametrize(("change", "message"), [
    (["--split-seed", "1"], "holds results with --split-seed 0, this command has 1"),
    # each case a whole run (about 10 s): one in the default tests, the others with -m slow
    pytest.param(["--subset", "300"], "holds results with --subset 200, this command has 300", marks=pytest.mark.slow),
    pytest.param(["--image-size", "48"], "holds results with --image-size 32, this command has 48", marks=pytest.mark.slow),
    pytest.param(["--epochs", "3"], "holds results of strategy 'linear_probe' trained with another recipe (epochs 2 -> 3",
                 marks=pytest.mark.slow),
    pytest.param(["--lr", "0.5"], "(lr 0.014 -> 0.5;", marks=pytest.mark.slow),
])
def test_resuming_with_incomparable_settings_refuses_in_one_line(capsys, tmp_path, change, message):
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    before = (tmp_path / "run" / RESULTS_FILE).read_bytes()
    code, _, err = run_cli(capsys, *argv, *change)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert "use the same" in err and "another --out" in err
    assert (tmp_path / "run" / RESULTS_FILE).read_bytes() == before


@pytest.mark.parametrize("damage", [pytest.param("older format", marks=pytest.mark.slow), "no config"])  # a run each, 12 s
def test_a_run_dir_of_an_incompatible_robench_is_not_resumed(capsys, tmp_path, damage):
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
            "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    config_path = tmp_path / "run" / "config.json"
    if damage == "no config":
        config_path.unlink()
        expected = "holds results but no config.json"
    else:
        config = json.loads(config_path.read_text())
        del config["format"], config["comparable"]
        config_path.write_text(json.dumps(config | {"robench_version": "0.0.9"}))
        expected = f"was written by robench 0.0.9 in results format unknown; this robench writes format {results.FORMAT}"
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and expected in err


def test_a_second_run_on_the_same_out_refuses_while_the_first_holds_it(capsys, tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    with FileLock(out_dir / LOCK_FILE):  # what a running robench holds
        code, _, err = run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--out", str(out_dir))
    assert code == 2 and err.count("\n") == 1
    assert f"another robench run holds {out_dir}" in err and "pass another --out" in err
    assert not (out_dir / RESULTS_FILE).exists()
    # Once released, the same command runs.
    assert run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                   "--out", str(out_dir), "--leaderboard-dir", str(tmp_path))[0] == 0


# --- determinism ------------------------------------------------------------------------------

@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_the_same_command_twice_gives_identical_rows_apart_from_timings(capsys, tmp_path):
    def rows(name):
        assert run_cli(capsys, "run", *FAST, "--strategies", "full,linear_probe", "--attacks", "fgsm,pgd:steps=2",
                       "--eps", "0.01,0.03", "--out", str(tmp_path / name), "--leaderboard-dir", str(tmp_path))[0] == 0
        return read_rows(tmp_path / name)

    first, second = rows("a"), rows("b")
    assert len(first) == 2 * (1 + 2 * 2 + 2)  # clean, 2 attacks x 2 eps, the escalation at each eps
    assert without_timing(first) == without_timing(second)
    assert any(r["train_seconds"] != s["train_seconds"] for r, s in zip(first, second))  # timings do differ


def test_a_row_that_cannot_be_written_is_one_line_saying_how_to_resume(tmp_path, monkeypatch):
    from robench.errors import RobenchError

    append_row(tmp_path, {"strategy": "a", "seed": 0, "attack": "none", "eps": 0.0, "status": "ok"})
    before = (tmp_path / RESULTS_FILE).read_bytes()
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))  # the disk fills up mid-line
    with pytest.raises(RobenchError, match="No space left on device.*run the same command again to resume"):
        append_row(tmp_path, {"strategy": "b", "seed": 0, "attack": "none", "eps": 0.0, "status": "ok"})
    monkeypatch.undo()
    assert (tmp_path / RESULTS_FILE).read_bytes() == before  # the part written was taken back


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_row_without_its_records_is_computed_again_on_resume(capsys, tmp_path, train_calls):
    """A row whose per-image records are missing (an older robench) is not published as done: the same
    command computes that cell again, from the checkpoint, and the row it writes has full records and
    the numbers of the original. (Records cut short are refused in one line: tests/test_battery_inputs.py.)"""
    out_dir = tmp_path / "run"
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm,minimal", "--eps", "0.01",
            "--out", str(out_dir), "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 0
    rows = read_rows(out_dir)
    damaged = []
    for row in rows:
        if row["attack"] in ("fgsm", "minimal"):
            del row["adv_pred" if row["attack"] == "fgsm" else "min_eps"]
            damaged.append(row["attack"])
    (out_dir / RESULTS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))

    assert run_cli(capsys, *argv)[0] == 0
    assert train_calls == ["linear_probe seed 0"]  # the model comes from its checkpoint
    latest = {row["attack"]: row for row in results.latest(read_rows(out_dir))}
    for attack in damaged:
        row = latest[attack]
        assert len(row["adv_pred"]) == row["n_attacked"] and len(row.get("min_eps", row["adv_pred"])) == row["n_attacked"]
    original = {row["attack"]: row for row in rows}
    assert latest["fgsm"]["robust_acc"] == original["fgsm"]["robust_acc"]  # FGSM is deterministic
