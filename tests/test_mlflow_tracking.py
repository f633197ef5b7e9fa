"""--track mlflow against a real local MLflow store (SQLite, MLflow's default, and the file store
the issue names): the run's numbers are found by mlflow.search_runs and equal results.jsonl's, a
second logging replaces the first, and a tracker or store that cannot work fails before training."""

from __future__ import annotations

import sys

import pytest

from robench.core.results import read_frame
from tests.test_cli import FAST, run_cli

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install mlflow-skinny (CI installs it)")

RUN = [*FAST, "--epochs", "1", "--strategies", "full,linear_probe", "--attacks", "fgsm,pgd", "--eps", "0.02",
       "--escalation", "off", "--track", "mlflow"]


def use_store(monkeypatch, tmp_path, kind: str) -> None:
    """A fresh MLflow store named by MLFLOW_TRACKING_URI, as a user would name it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if kind == "sqlite" else f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if kind == "file":  # MLflow 3 keeps its file store only on request
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    tmp_path.mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder (./mlruns) lands here


@pytest.mark.slow  # a whole run and three loggings, about 12 s
def test_a_tracked_runs_robust_accuracies_are_found_by_search_runs_and_equal_the_results(capsys, tmp_path, monkeypatch):
    use_store(monkeypatch, tmp_path / "sqlite", "sqlite")
    code, out, _ = run_cli(capsys, "run", *RUN, "--out", str(tmp_path / "r"))
    assert code == 0
    check_logged(tmp_path / "r")

    # logging the same run folder again (as a resumed run does) replaces it: each run is in the store once
    code, out, _ = run_cli(capsys, "track", str(tmp_path / "r"))
    assert code == 0 and out.startswith("MLflow run ")
    assert len(mlflow.search_runs(experiment_names=["robench"])) == 3  # the run and its two models

    # the file store the issue names (MLflow 3 keeps it on request) holds the same
    use_store(monkeypatch, tmp_path / "file", "file")
    code, out, _ = run_cli(capsys, "track", str(tmp_path / "r"))
    assert code == 0 and "file:" in out
    check_logged(tmp_path / "r")


def check_logged(run_dir):
    """The store's runs of ``run_dir`` hold what its results.jsonl holds."""
    models = mlflow.search_runs(experiment_names=["robench"], filter_string="params.seed = '0'")
    assert sorted(models["params.strategy"]) == ["full", "linear_probe"]
    rows = read_frame(run_dir)
    for strategy in ("full", "linear_probe"):
        logged = models[models["params.strategy"] == strategy].iloc[0]
        for attack in ("fgsm", "pgd"):
            row = rows[(rows["strategy"] == strategy) & (rows["attack"] == attack)].iloc[0]
            assert logged[f"metrics.robust_acc/{attack}/0.02"] == pytest.approx(row["robust_acc"])
        clean = rows[(rows["strategy"] == strategy) & (rows["attack"] == "none")].iloc[0]
        assert logged["metrics.clean_acc"] == pytest.approx(clean["clean_acc"])
        assert logged["metrics.clean_ece"] == pytest.approx(clean["ece"])
        worst = logged["metrics.robust_acc/worst case/0.02"]  # the worst case is never above either attack
        assert worst <= min(logged["metrics.robust_acc/fgsm/0.02"], logged["metrics.robust_acc/pgd/0.02"]) + 1e-9
    parents = mlflow.search_runs(experiment_names=["robench"], filter_string=f"attributes.run_name = '{run_dir.name}'")
    assert len(parents) == 1 and parents.iloc[0]["params.eps"] == "0.02"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parents.iloc[0]["run_id"])}
    assert {"leaderboard.md", "config.json", "results.jsonl"} <= artifacts


@pytest.mark.parametrize(("setup", "message"), [
    ("wandb", "--track 'wandb' is not a tracker robench logs to: give one of mlflow"),
    ("missing", "--track mlflow needs MLflow, which is not installed: pip install mlflow-skinny"),
    ("refused store", "MLflow (file:"),
])
def test_a_tracker_that_cannot_work_is_one_line_before_training(capsys, tmp_path, monkeypatch, setup, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # MLflow 3 refuses its file store without it
    argv = [arg if arg != "mlflow" else ("wandb" if setup == "wandb" else arg) for arg in RUN]
    if setup == "missing":
        monkeypatch.setitem(sys.modules, "mlflow", None)  # Python's own way to make a package unimportable
    code, _, err = run_cli(capsys, "run", *argv, "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_tracking_a_folder_that_holds_no_run_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = run_cli(capsys, "track", str(tmp_path / "nowhere"))
    assert code == 2 and err == f"robench: error: run directory {tmp_path / 'nowhere'} not found: pass the --out folder of a robench run\n"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    code, _, err = run_cli(capsys, "track", str(tmp_path / "empty"))
    assert code == 2 and err.count("\n") == 1 and "nothing to log" in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow opened a store
