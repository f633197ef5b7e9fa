"""Calibration: torchmetrics' ECE and our NLL equal a few lines of our own, and a run's attacked cells
carry the calibration of the answers after the attack, as an attack written outside robench finds it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchattacks

import robench
from robench.pipeline.calibration import BINS, calibration, reliability


def own_ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): sum over equal-width bins of |accuracy - confidence| x share."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).float()
    total = 0.0
    for low in torch.arange(bins) / bins:
        inside = (confidence > low) & (confidence <= low + 1 / bins)
        if inside.any():
            total += inside.float().mean() * (correct[inside].mean() - confidence[inside].mean()).abs()
    return float(total)


def test_ece_and_nll_equal_an_independent_computation():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 7, generator=generator), dim=1)
    labels = torch.randint(0, 7, (500,), generator=generator)
    found = calibration(probs, labels)
    assert found["ece"] == pytest.approx(own_ece(probs, labels), abs=1e-6)
    assert found["nll"] == pytest.approx(float(-probs[torch.arange(500), labels].log().mean()), rel=1e-6)
    confident_and_right = torch.nn.functional.one_hot(labels, 7).float()  # certain and always right: calibrated
    assert calibration(confident_and_right, labels) == {"ece": 0.0, "nll": pytest.approx(0.0, abs=1e-6)}
    assert calibration(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long)) == {"ece": None, "nll": None}


def test_the_reliability_bins_are_the_answers_binned_and_give_back_the_ece():
    generator = torch.Generator().manual_seed(1)
    probs = torch.softmax(3 * torch.randn(400, 7, generator=generator), dim=1)
    labels = torch.randint(0, 7, (400,), generator=generator)
    bins = reliability(probs, labels)
    confidence, predicted = probs.max(1)
    for k in range(BINS):
        inside = (confidence > k / BINS) & (confidence <= (k + 1) / BINS)
        assert bins["counts"][k] == int(inside.sum())
        if inside.any():
            assert bins["accuracy"][k] == pytest.approx(float((predicted == labels)[inside].float().mean()))
            assert bins["confidence"][k] == pytest.approx(float(confidence[inside].mean()))
        else:
            assert bins["accuracy"][k] is None and bins["confidence"][k] is None
    ece = sum(n * abs(a - c) for n, a, c in zip(bins["counts"], bins["accuracy"], bins["confidence"]) if n) / 400
    assert ece == pytest.approx(calibration(probs, labels)["ece"], abs=1e-6)  # torchmetrics' ECE, from the diagram


def test_a_runs_cells_carry_the_calibration_of_the_answers_after_the_attack(trained, tmp_path):
    model, x, y = trained
    rows = robench.benchmark(model, dataset="synthetic", image_size=32, attacks="fgsm", eps=0.02,
                             escalation="off", out=tmp_path / "run", quiet=True)
    clean, fgsm = (rows[rows["attack"] == name].iloc[0] for name in ("none", "fgsm"))
    adversarial = torchattacks.FGSM(model, eps=0.02)(x, y)  # used where clean-correct, as robench attacks only those
    with torch.no_grad():
        clean_probs = torch.softmax(model(x), 1)
        correct = clean_probs.argmax(1) == y
        after = torch.where(correct[:, None], torch.softmax(model(adversarial), 1), clean_probs)
    assert clean["ece"] == pytest.approx(own_ece(clean_probs, y), abs=1e-5)
    assert fgsm["ece"] == pytest.approx(own_ece(after, y), abs=0.02)  # torchattacks may differ on an image or so
    assert fgsm["nll"] == pytest.approx(float(-after[torch.arange(len(y)), y].log().mean()), rel=0.05)
    assert fgsm["nll"] > clean["nll"]  # the attack makes the true class less likely
    # the clean row keeps the model's reliability diagram over every test image, and the page draws it
    assert sum(clean["reliability"]["counts"]) == clean["n_test"] and not isinstance(fgsm["reliability"], dict)
    assert "-reliability.png)" in Path(rows.attrs["leaderboard"]).read_text()
    assert [p.stat().st_size > 0 for p in Path(rows.attrs["run_dir"]).glob("*-reliability.png")] == [True]
