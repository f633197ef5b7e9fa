"""Executors: the grid on Ray gives the rows of the sequential run; Ray only when asked for it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from robench.cli import main
from robench.core.results import read_rows
from robench.pipeline import executors, model_job, runner
from robench_plugins.attacks.fgsm import FGSM
from robench_plugins.strategies.full import Full

REPO = Path(__file__).resolve().parents[1]
TIMING = ("train_seconds", "seconds_per_epoch", "attack_seconds", "peak_mem_mb", "node")  # and where it ran
BASE = ["--dataset", "synthetic", "--subset", "200", "--epochs", "2", "--quiet", "--attacks", "fgsm", "--eps", "0.01"]
GRID = [*BASE, "--strategies", "full,linear_probe"]
SEEDS = ["--seeds", "0,1"]  # a repeated --seeds (or --strategies) adds up: tests that want others leave these out


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def by_cell(rows: list[dict]) -> list[str]:
    """Rows minus timings, in cell order: Ray writes them in the order its tasks finish."""
    rows = sorted(rows, key=lambda r: (r["strategy"], r["seed"], r["attack"], r["eps"]))
    return [json.dumps({k: v for k, v in row.items() if k not in TIMING}, sort_keys=True) for row in rows]


@pytest.mark.slow  # starts a local Ray instance (16 s); the other executor tests stay in the default run
def test_a_grid_on_ray_gives_the_rows_of_the_sequential_run(capsys, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    assert run_cli(capsys, "run", *GRID, *SEEDS, "--out", str(tmp_path / "local"), "--leaderboard-dir", str(tmp_path))[0] == 0
    # the models train in Ray's worker processes, not in this one (raising=True: the name must exist)
    monkeypatch.setattr(model_job, "train", None, raising=True)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    try:
        code, _, err = run_cli(capsys, "run", *GRID, *SEEDS, "--executor", "ray", "--out", str(tmp_path / "ray"),
                               "--leaderboard-dir", str(tmp_path))
        assert code == 0, err
        assert ray.is_initialized()  # an instance the caller started is left to the caller
        # a task that raises loses its cell, with the task's own exception, and the others go on
        finished = {f.cell: f for f in executors.Ray()(range, [(0, 3), (0, "x")], {})}
        assert finished[(0, 3)].rows == [0, 1, 2] and finished[(0, 3)].error is None
        assert isinstance(finished[(0, "x")].error, TypeError) and finished[(0, "x")].rows == []
        # --threads is each task's CPU request and its torch thread count
        finished = list(executors.Ray(threads=2)(torch_threads, [()], {}))
        assert finished[0].rows[0]["threads"] == 2 and "ray node" in finished[0].rows[0]["node"]
        # --tune's trials go through the same executor: they train in the workers too
        code, _, err = run_cli(capsys, "run", *BASE, "--strategies", "linear_probe", "--seeds", "0", "--tune", "lr",
                               "--tune-budget", "4x1", "--executor", "ray", "--out", str(tmp_path / "tuned"))
        assert code == 0, err
    finally:
        ray.shutdown()
    local, on_ray = read_rows(tmp_path / "local"), read_rows(tmp_path / "ray")
    assert len(local) == 2 * 2 * 3 and {r["status"] for r in on_ray} == {"ok"}  # clean, fgsm, escalation per model
    assert by_cell(local) == by_cell(on_ray)
    assert {r["node"] for r in local} == {platform.node()} and all("(ray node " in r["node"] for r in on_ray)
    assert len(list((tmp_path / "ray" / "checkpoints").glob("*.safetensors"))) == 4  # written by the tasks
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    # --device auto: each task's GPU share is Ray's to decide (none on this CPU cluster), its device its node's
    assert config["execution"]["executor"] == "ray" and config["execution"]["ray_gpus_per_task"] is None
    assert {r["device"] for r in on_ray} == {r["device"] for r in local} == {"cpu"}
    trials = json.loads((tmp_path / "tuned" / "config.json").read_text())["tuning"]["strategies"]["linear_probe"]["trials"]
    assert len(trials) == 4 and len({trial["params"]["lr"] for trial in trials}) == 4  # each worker's sampler its own seed


@pytest.mark.slow  # starts Ray (16 s or more)
def test_on_a_cluster_with_gpus_each_task_asks_for_one_unless_told_otherwise():
    """A CPU driver with --device auto decides no GPU share: Ray gives every task a GPU where its cluster
    has some (declared here: this machine has none to compute on), and none where told 0."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="error")
    try:
        auto = list(executors.Ray(gpus_per_task=None)(gpu_ids, [()], {}))
        none = list(executors.Ray(gpus_per_task=0.0)(gpu_ids, [()], {}))
    finally:
        ray.shutdown()
    assert [len(f.rows[0]["gpus"]) for f in auto] == [1] and [f.rows[0]["gpus"] for f in none] == [[]]


def gpu_ids() -> list[dict]:
    """A Ray task's work that reports the GPUs Ray gave it."""
    import ray

    return [{"gpus": list(ray.get_gpu_ids())}]


def test_with_device_auto_a_task_computes_on_the_device_its_own_node_sees(monkeypatch):
    """The driver planned on its CPU; a task on a node whose torch sees a GPU trains and attacks there,
    and says so in its rows. A device the run named is kept."""
    config = runner.RunConfig(dataset="synthetic", backbone=SimpleNamespace(weights=None), strategies=[], attacks=[],
                              eps=[0.01], seeds=[0], out=Path("."), leaderboard_dir=None, name="t", train_precision="fp32")
    plan = runner.Plan([], [], None, config, torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # this node's torch sees a GPU
    seen = executors._run_cell(lambda *cell, plan: [{"device_in_work": plan.device.type}], (None, 0), {"plan": plan})
    assert seen == [{"device_in_work": "cuda", "node": platform.node(), "device": "cuda"}]
    named = {"plan": plan._replace(config=replace(config, device="cpu"))}
    assert executors._run_cell(lambda *cell, plan: [{"device_in_work": plan.device.type}], (None, 0), named)[0]["device"] == "cpu"


def torch_threads() -> list[dict]:
    """A Ray task's work that reports the torch threads it computes with."""
    return [{"threads": torch.get_num_threads()}]


@pytest.mark.slow  # starts Ray (16 s or more)
def test_ray_started_from_a_folder_holding_a_robench_folder_runs_every_cell(tmp_path):
    """Ray puts the driver's working folder on its workers' import path: a clone's parent holds a
    robench/ folder, which its workers imported instead of the installed package (every cell failed)."""
    pytest.importorskip("ray")
    parent = tmp_path / "parent"
    (parent / "robench" / "docs").mkdir(parents=True)  # a clone of robench, seen from its parent
    command = Path(sys.executable).parent / "robench"  # `python -m robench` here would import that folder itself
    done = subprocess.run([str(command), "run", *BASE, "--strategies", "linear_probe", "--executor", "ray",
                           "--threads", "1", "--out", str(tmp_path / "run")], cwd=parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"} and all("(ray node " in r["node"] for r in rows)
    assert Path.cwd() != parent


def test_ray_not_installed_is_one_line_saying_what_to_install(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    code, _, err = run_cli(capsys, "run", *GRID, *SEEDS, "--executor", "ray", "--out", str(tmp_path / "run"))
    assert code == 2 and err.count("\n") == 1 and 'pip install "robench[ray]"' in err, err


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_the_local_executor_does_not_import_ray(tmp_path):
    argv = ["run", *BASE, "--seeds", "0", "--strategies", "linear_probe", "--out", str(tmp_path / "run"),
            "--leaderboard-dir", str(tmp_path)]
    script = f"import sys; from robench.cli import main; assert main({argv!r}) == 0; assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_a_model_whose_task_died_gets_failed_rows_and_the_next_run_retries_it(capsys, tmp_path, monkeypatch):
    """What the driver does when a Ray worker dies (killed for memory, machine lost), without Ray."""
    lost = RuntimeError("worker died")

    def dying_first(work, cells, context):
        first, *rest = cells
        yield executors.Finished(first, [], lost)
        yield from executors.local(work, rest, context)

    argv = ["run", *GRID, "--seeds", "0", "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path)]
    monkeypatch.setattr(executors, "choose", lambda *args: dying_first)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1 and "failed: full seed 0 none@0: RuntimeError: worker died" in err
    rows = read_rows(tmp_path / "run")
    assert [(r["strategy"], r["attack"], r["status"]) for r in rows] == [
        ("full", "none", "failed"), ("full", "fgsm", "failed"), ("full", "escalation", "failed"),
        ("linear_probe", "none", "ok"), ("linear_probe", "fgsm", "ok"), ("linear_probe", "escalation", "ok")]

    monkeypatch.setattr(executors, "choose", lambda *args: executors.local)
    assert run_cli(capsys, *argv)[0] == 0
    retried = read_rows(tmp_path / "run")[6:]
    assert [(r["strategy"], r["attack"], r["status"]) for r in retried] == [
        ("full", "none", "ok"), ("full", "fgsm", "ok"), ("full", "escalation", "ok")]


def test_lost_model_rows_cover_only_the_cells_still_to_do():
    config = runner.RunConfig(dataset="synthetic", backbone=None, strategies=[], attacks=[], eps=[0.01, 0.02], seeds=[0],
                              out=Path("."), leaderboard_dir=Path("."), name="t")
    strategy, attack = runner.Planned("full", Full()), runner.Planned("fgsm", FGSM())
    done = {("full", 0, "none", 0.0), ("full", 0, "fgsm", 0.01)}
    planned = runner.Plan([strategy], [attack], None, config, torch.device("cpu"))
    rows = runner.lost_model_rows(planned, strategy, 0, done, MemoryError("killed"))
    assert [(r["attack"], r["eps"], r["status"], r["error"]) for r in rows] == [
        ("fgsm", 0.02, "failed", "MemoryError: killed"), ("escalation", 0.01, "failed", "MemoryError: killed"),
        ("escalation", 0.02, "failed", "MemoryError: killed")]



def test_a_task_whose_node_lacks_the_weights_fails_in_one_line_naming_the_node(tmp_path):
    from types import SimpleNamespace

    from robench.errors import RobenchError

    plan = SimpleNamespace(config=SimpleNamespace(backbone=SimpleNamespace(weights=tmp_path / "vit.safetensors")))
    with pytest.raises(RobenchError, match=rf"--weights {tmp_path}/vit.safetensors is not on Ray node {platform.node()}: "
                                           "put the file at the same path on every node"):
        executors._run_cell(model_job.model_rows, (None, 0), {"plan": plan})
    (tmp_path / "vit.safetensors").write_bytes(b"")  # present: the work runs, and each row names the node
    assert executors._run_cell(lambda *cell, plan: [{"cell": cell}], (None, 0), {"plan": plan}) == [{"cell": (None, 0), "node": platform.node()}]
