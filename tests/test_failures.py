"""Failure isolation: a cell that raises is recorded with its error and the other cells complete.

The broken strategies and attacks below come in through a fake entry point of the "robench"
group, the way a third-party plugin package would, so the whole path (registry, runner, CLI)
is the real one.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robench
from robench.attack import Attack
from robench.cli import main
from robench.core.results import read_frame, read_rows
from robench.pipeline import registry as registry_module
from robench.strategy import Recipe, Strategy
from robench_plugins.strategies.full import Full

FAST = ["--dataset", "synthetic", "--epochs", "1", "--seeds", "0", "--eps", "0.01,0.02", "--quiet"]


class Crashes(Full):
    """A plugin bug that shows only once training starts."""

    name = "crashes"

    def train_mode(self, model):
        raise RuntimeError("plugin bug in train_mode")


class NanLoss(Strategy):
    """Every logit is NaN, so the first training loss is NaN."""

    name = "nan_loss"
    recipe = Recipe(epochs=1, batch_size=64)

    def adapt(self, model):
        return _TimesNan(model)


class _TimesNan(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images) * float("nan")


class TrainingOOM(Full):
    name = "training_oom"

    def train_mode(self, model):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class BrokenAttack(Attack):
    name = "broken_attack"
    family = "iterative"
    norm = "Linf"

    def perturb(self, model, images, labels, eps):
        raise ValueError("plugin bug in perturb")


class AttackOOM(Attack):
    name = "attack_oom"
    family = "iterative"
    norm = "Linf"

    def perturb(self, model, images, labels, eps):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")


class _BrokenPlugins:
    @robench.hookimpl
    def register_strategies(self, register):
        for strategy in (Crashes, NanLoss, TrainingOOM):
            register(strategy)

    @robench.hookimpl
    def register_attacks(self, register):
        register(BrokenAttack)
        register(AttackOOM)


class _EntryPoint:
    """What importlib.metadata gives for an installed plugin package's entry point."""

    def __init__(self, name, package, load):
        self.name, self.value, self._load = name, f"{package.replace('-', '_')}.plugin", load

        class dist:  # noqa: N801
            pass

        dist.name = package
        self.dist = dist

    def load(self):
        return self._load()


def _importing_fails():
    raise ImportError("No module named 'torch_nonexistent'")


@pytest.fixture
def installed(monkeypatch):
    """Install fake plugin packages next to the real ones: one that works, one that fails to import."""
    real = registry_module.entry_points(group="robench")
    fakes = [_EntryPoint("broken", "robench-broken", _BrokenPlugins), _EntryPoint("unloadable", "robench-unloadable", _importing_fails)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: [*real, *fakes])
    registry_module._load_registry.cache_clear()
    yield
    registry_module._load_registry.cache_clear()


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_failing_cells_are_recorded_and_the_other_cells_complete(installed, capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "run", *FAST, "--strategies", "linear_probe,crashes,nan_loss", "--attacks", "fgsm,broken_attack",
        "--out", str(out_dir), "--leaderboard-dir", str(tmp_path),
    )
    assert code == 1
    rows = read_rows(out_dir)
    assert len(rows) == 3 * (1 + 2 * 2 + 2)  # every cell has a row, failed or not (the escalation at each eps too)
    by_cell = {(r["strategy"], r["attack"], r["eps"]): r for r in rows}

    good = [by_cell["linear_probe", attack, eps] for attack, eps in
            [("none", 0.0), ("fgsm", 0.01), ("fgsm", 0.02)]]
    for row in good:  # the healthy cells are complete
        assert row["status"] == "ok" and row["error"] is None
        assert 0 <= row["robust_acc"] <= row["clean_acc"] and row["trainable_params"] > 0 and row["best_epoch"] >= 1
    for eps in (0.01, 0.02):
        row = by_cell["linear_probe", "broken_attack", eps]
        assert row["status"] == "failed" and row["error"] == "ValueError: plugin bug in perturb"
        assert row["clean_acc"] == good[0]["clean_acc"]  # the model's facts are still there
    for attack, eps in [("none", 0.0), ("fgsm", 0.01), ("broken_attack", 0.02)]:
        assert by_cell["crashes", attack, eps]["error"] == "RuntimeError: plugin bug in train_mode"
        assert by_cell["nan_loss", attack, eps]["error"].startswith("TrainingError: loss became nan in epoch 1")
    assert {r["status"] for r in rows if r["strategy"] != "linear_probe"} == {"failed"}

    # The run ends with a summary of the failed cells on stderr, even with --quiet.
    assert "failed: crashes seed 0 none@0: RuntimeError: plugin bug in train_mode" in err
    assert "failed: linear_probe seed 0 broken_attack@0.01: ValueError: plugin bug in perturb" in err
    assert err.strip().endswith("robench: 16 cells failed (listed above and in the leaderboard)")
    assert "Traceback" not in err and f"leaderboard: {tmp_path / 'run.md'}" in out
    board = (tmp_path / "run.md").read_text()
    assert "## Failed cells" in board and "plugin bug in train_mode" in board


def test_out_of_memory_says_which_batch_size_to_lower(installed, capsys, tmp_path):
    code, _, _ = run_cli(capsys, "run", *FAST, "--strategies", "training_oom,linear_probe", "--attacks", "attack_oom",
                         "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path))
    assert code == 1
    errors = {(r["strategy"], r["attack"], r["eps"]): r["error"] for r in read_rows(tmp_path / "run")}
    assert errors["training_oom", "none", 0.0].endswith("(out of memory in training: lower --batch-size (or the strategy's :batch_size=N))")
    assert errors["linear_probe", "attack_oom", 0.02].endswith("(out of memory in attack: lower --attack-batch-size)")
    assert errors["linear_probe", "none", 0.0] is None


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_a_failed_cell_is_retried_by_the_next_run_and_superseded(capsys, tmp_path, monkeypatch):
    import robench.pipeline.model_job

    real_sweep = robench.pipeline.model_job.attack_sweep
    calls = []

    def flaky_sweep(model, attack, *args, **kwargs):  # fails the first time only, like a transient OOM
        calls.append(attack.name)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_sweep(model, attack, *args, **kwargs)

    monkeypatch.setattr(robench.pipeline.model_job, "attack_sweep", flaky_sweep)
    argv = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--out", str(tmp_path / "run"),
            "--leaderboard-dir", str(tmp_path)]
    assert run_cli(capsys, *argv)[0] == 1
    assert run_cli(capsys, *argv)[0] == 0
    rows = read_rows(tmp_path / "run")
    assert [(r["attack"], r["eps"], r["status"]) for r in rows] == [
        ("none", 0.0, "ok"), ("fgsm", 0.01, "failed"), ("fgsm", 0.02, "failed"),
        ("escalation", 0.01, "failed"), ("escalation", 0.02, "failed"),  # nothing to escalate: every attack failed
        ("fgsm", 0.01, "ok"), ("fgsm", 0.02, "ok"), ("escalation", 0.01, "ok"), ("escalation", 0.02, "ok"),
    ]
    frame = read_frame(tmp_path / "run")  # the last version of each cell
    assert len(frame) == 5 and set(frame["status"]) == {"ok"}
    assert "## Failed cells\n\nNone." in (tmp_path / "run.md").read_text()


def test_list_still_works_when_a_plugin_fails_to_import(installed, capsys):
    code, out, err = run_cli(capsys, "list")
    assert code == 0 and err == ""
    for name in ("full", "linear_probe", "fgsm", "pgd", "crashes", "broken_attack"):
        assert f"  {name} " in out
    assert "plugin 'unloadable' from package 'robench-unloadable' failed to load: ImportError: No module named 'torch_nonexistent'" in out


def test_an_unknown_name_mentions_the_plugin_that_failed_to_load(installed, capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", "no_such_strategy", "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "unknown strategy 'no_such_strategy'" in err and "'robench-unloadable' failed to load" in err


def test_a_model_with_no_correct_test_image_gets_rows_not_a_failure(micro_model):
    from robench.pipeline.evaluate import attack_sweep, predict
    from robench_plugins.attacks.fgsm import FGSM

    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    preds = predict(micro_model, images, 4, "cpu")
    labels = (preds + 1) % 7  # every prediction wrong
    metrics = attack_sweep(micro_model, FGSM(), [0.01], images, labels, preds, 4, "cpu")[0.01]
    assert metrics["robust_acc"] == 0 and metrics["n_clean_correct"] == 0
    assert metrics["acc_on_correct"] != metrics["acc_on_correct"]  # NaN: no denominator
