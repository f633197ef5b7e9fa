"""Issue 23: --tune searches each strategy's recipe on the validation split with Optuna, the same budget for all."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import optuna
import pytest

from robench.cli import main
from robench.cli.parser import build_parser
from robench.cli.run_command import config_from_args
from robench.pipeline.model_job import train_trial
from robench.pipeline.plan import plan
from robench.pipeline.prepare import prepare_data
from robench.pipeline.tuning import STORAGE, tune
from robench_plugins.strategies.linear_probe import LinearProbe

BASE = ["run", "--dataset", "synthetic", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--seeds", "0",
        "--escalation", "off"]


def test_a_tuned_run_records_its_trials_trains_the_chosen_recipe_and_says_so_on_the_page(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*BASE, "--tune", "lr", "--tune-budget", "3x2", "--out", str(out)]) == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    found = config["tuning"]["strategies"]["linear_probe"]
    assert config["tuning"]["budget"] == {"trials": 3, "epochs": 2}
    assert len(found["trials"]) == 3 and {t["state"] for t in found["trials"]} <= {"COMPLETE", "PRUNED"}
    assert 1e-4 <= found["chosen"]["lr"] <= 1e-1  # the strategy's declared range
    assert found["value"] == max(t["value"] for t in found["trials"] if t["state"] == "COMPLETE")
    assert config["comparable"]["recipes"]["linear_probe"]["lr"] == found["chosen"]["lr"]  # what every seed trained with
    assert config["comparable"]["recipes"]["linear_probe"]["epochs"] == LinearProbe.recipe.epochs  # not the trials' 2
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{out / STORAGE}")[0],
                              storage=f"sqlite:///{out / STORAGE}")
    assert [t.params for t in study.trials] == [t["params"] for t in found["trials"]]
    page = (out / "leaderboard.md").read_text()
    assert "recipes tuned" in page and "chosen from 3 trials on validation" in page and "3 trials of at most 2 epochs" in page


class Interrupted(Exception):
    pass


def test_an_interrupted_search_continues_where_it_stopped(tmp_path):
    argv = [*BASE, "--tune", "lr,weight_decay", "--tune-budget", "4x1", "--out", str(tmp_path / "run")]
    planned = plan(config_from_args(build_parser().parse_args(argv), argv))
    planned.config.out.mkdir(parents=True)
    prepared = prepare_data(planned.config, planned.dataset)

    def stop_after_two(study, trial):
        if trial.number == 1:
            raise Interrupted  # as a Ctrl-C after the second trial

    with pytest.raises(Interrupted):
        tune(planned, prepared, train_trial, callbacks=[stop_after_two])
    storage = f"sqlite:///{planned.config.out / STORAGE}"
    first = [t.params for t in optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage).trials]
    assert len(first) == 2
    tuned, record = tune(planned, prepared, train_trial)
    trials = record["strategies"]["linear_probe"]["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3] and [t["params"] for t in trials[:2]] == first
    assert tuned.strategies[0].recipe.lr == record["strategies"]["linear_probe"]["chosen"]["lr"]
    again, same = tune(planned, prepared, train_trial)  # a finished search is read back, not run again
    assert same["strategies"] == record["strategies"] and again.strategies == tuned.strategies


def test_a_split_without_validation_images_cannot_be_tuned(tmp_path):
    argv = [*BASE, "--tune", "lr", "--out", str(tmp_path / "run")]
    planned = plan(config_from_args(build_parser().parse_args(argv), argv))
    prepared = prepare_data(planned.config, planned.dataset)
    prepared = dataclasses.replace(prepared, split=dataclasses.replace(prepared.split, val=np.array([], dtype=int)))
    with pytest.raises(Exception, match="validation split"):
        tune(planned, prepared, train_trial)


@pytest.mark.parametrize(("flags", "message"), [
    (["--tune", "epochs"], "--tune epochs: not a recipe field --tune can search"),
    (["--tune", "momentum"], "declares no range for momentum"),
    (["--tune", "lr=1e-2:1e-5"], "is empty"),
    (["--tune", "lr=abc"], "write NAME or NAME=LOW:HIGH"),
    (["--tune", ","], "--tune names no recipe field"),
    (["--tune", "lr", "--tune-budget", "0x3"], "--tune-budget '0x3' is not TRIALSxEPOCHS"),
    (["--tune", "lr", "--tune-budget", "twelve"], "--tune-budget 'twelve' is not TRIALSxEPOCHS"),
])
def test_bad_tuning_input_is_one_line_before_anything_trains(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main([*BASE, *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (out / "checkpoints").exists()


def test_a_strategy_that_declares_no_search_space_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(LinearProbe, "search_space", {})
    assert main([*BASE, "--tune", "lr", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "declares no search space" in err and err.count("\n") == 1


def test_a_model_that_learned_nothing_is_named_at_the_end_with_what_to_try(tmp_path, capsys):
    argv = [*BASE, "--out", str(tmp_path / "run")]
    argv[argv.index("--strategies") + 1] = "linear_probe,linear_probe:lr=1e-12"
    assert main(argv) == 0, capsys.readouterr().err
    lines = [line for line in capsys.readouterr().out.splitlines() if "learned nothing" in line]
    assert len(lines) == 1 and lines[0].startswith("linear_probe(lr=1e-12) learned nothing (") and "--tune" in lines[0]


def test_runs_tuned_with_one_budget_share_a_page_naming_every_search_and_other_budgets_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])  # drawn in test_plots.py
    made = {}
    for name, strategy, budget in (("a", "linear_probe", "2x1"), ("b", "linear_probe:weight_decay=0.001", "2x1"),
                                   ("c", "linear_probe:weight_decay=0.01", "3x1")):
        made[name] = tmp_path / name
        argv = [strategy if arg == "linear_probe" else arg for arg in BASE]
        argv += ["--tune", "lr", "--tune-budget", budget, "--out", str(made[name])]
        assert main(argv) == 0, capsys.readouterr().err
    page = tmp_path / "page"
    assert main(["leaderboard", str(made["a"]), str(made["b"]), "--leaderboard-dir", str(page), "--name", "both"]) == 0
    header = (page / "both.md").read_text().split("Command:")[0]
    assert "linear_probe: lr" in header and "linear_probe(weight_decay=0.001): lr" in header and "2 trials of at most 1 epochs" in header
    capsys.readouterr()
    assert main(["leaderboard", str(made["a"]), str(made["c"]), "--leaderboard-dir", str(page), "--name", "mixed"]) == 2
    assert "--tune-budget 2x1 vs 3x1: their strategies were not given the same search" in capsys.readouterr().err


@pytest.mark.slow  # adversarial training through the backbone in every trial: a minute on 2 busy cores
def test_a_defended_strategy_gets_its_own_search_with_the_same_budget(tmp_path, capsys, monkeypatch):
    """Issue 28, item 3: the tuning rule covers defended models too (the adversarial training runs in each trial)."""
    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])
    out = tmp_path / "run"
    assert main([*BASE, "--defenses", "none,fgsm_at:eps=0.01", "--tune", "lr", "--tune-budget", "2x1", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    searched = json.loads((out / "config.json").read_text())["tuning"]["strategies"]
    assert set(searched) == {"linear_probe", "linear_probe + fgsm_at(eps=0.01)"}
    assert all(len(found["trials"]) == 2 for found in searched.values())
