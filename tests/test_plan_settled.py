"""Issue 22: a run's settings are settled once into one immutable Plan, and every step after it reads them there."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch

from robench.cli.parser import build_parser
from robench.cli.run_command import config_from_args
from robench.pipeline import plan as plan_module
from robench.pipeline import prepare

ARGV = ["run", "--dataset", "synthetic", "--strategies", "full,linear_probe", "--attacks", "fgsm", "--eps", "2/255",
        "--seeds", "0", "--out", "runs/relative", "--device", "cpu"]


def planned_from_the_command(monkeypatch):
    calls = []
    original = prepare.resolve_dataset

    def counting(text):
        calls.append(text)
        return original(text)

    monkeypatch.setattr(prepare, "resolve_dataset", counting)
    monkeypatch.setattr(plan_module, "resolve_dataset", counting)
    config = config_from_args(build_parser().parse_args(ARGV), ARGV)
    return config, plan_module.plan(config), calls


def test_the_dataset_is_resolved_once_from_the_command_to_the_plan(monkeypatch):
    config, planned, calls = planned_from_the_command(monkeypatch)
    assert calls == ["synthetic"]
    assert planned.dataset is config.dataset_plugin


def test_the_plan_holds_the_settled_config_and_never_changes_the_one_it_was_given(monkeypatch):
    config, planned, _ = planned_from_the_command(monkeypatch)
    assert planned.device == torch.device("cpu")
    assert planned.config.out == Path("runs/relative").absolute() and config.out == Path("runs/relative")
    assert planned.config.train_precision == "fp32" and config.train_precision == "auto"
    assert isinstance(planned.config.threads, int) and config.threads is None
    assert [s.label for s in planned.strategies] == ["full", "linear_probe"] and [a.label for a in planned.attacks] == ["fgsm"]
    with pytest.raises(FrozenInstanceError):
        planned.config.eps = [0.5]  # type: ignore[misc]
    with pytest.raises(AttributeError):
        planned.device = torch.device("meta")  # type: ignore[misc]
