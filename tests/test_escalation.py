"""Escalation (robench.pipeline.escalation): the survivors of the configured attacks, attacked again harder.

Checked on the trained micro ViT against a PGD-10 whose step is too small to cross its ball (a
misconfigured attack leaves survivors it should not), with an attack written here, outside
robench's code path, as the judge of what escalation leaves."""

from __future__ import annotations

import json

import pytest
import torch

from robench.cli import main
from robench.pipeline.escalation import escalate, escalation_metrics, label, labels_for
from robench_plugins.attacks.pgd import PGD

EPS = 8 / 255  # a strong attack fools nearly every image of the micro ViT; a tenth of the ball, few


@pytest.fixture(scope="module")
def correct(trained):
    model, x, y = trained
    with torch.no_grad():
        right = (model(x).argmax(1) == y).nonzero().flatten()[:24]
    return model, x[right], y[right]


def independent_pgd(model, x, y, eps, steps=50, restarts=3) -> torch.Tensor:
    """Which images a margin-loss L-inf PGD with random restarts fools: a few lines of its own."""
    fooled = torch.zeros(len(x), dtype=torch.bool)
    generator = torch.Generator().manual_seed(1234)
    for _ in range(restarts):
        adv = (x + (torch.rand(x.shape, generator=generator) * 2 - 1) * eps).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            logits = model(adv)
            own = logits.gather(1, y[:, None]).squeeze(1)
            other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
            fooled |= (logits.argmax(1) != y).detach()
            (grad,) = torch.autograd.grad((other - own).sum(), adv)
            adv = (x + (adv.detach() + eps / 8 * grad.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        with torch.no_grad():
            fooled |= model(adv).argmax(1) != y
    return fooled


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_escalation_takes_what_a_weak_pgd10_left_and_a_stronger_attack_finds_no_more(correct):
    model, x, y = correct
    torch.manual_seed(0)
    weak = PGD(steps=10, alpha=EPS / 100).perturb(model, x, y, EPS)  # 10 steps that travel a tenth of the ball
    with torch.no_grad():
        weak_preds = model(weak).argmax(1)
    survivors = weak_preds == y
    assert survivors.sum() >= 5, "the weak PGD-10 must leave survivors for this test to mean anything"
    torch.manual_seed(0)
    adv, fooled, rounds = escalate(model, x[survivors], y[survivors], EPS, rounds=2)
    assert fooled.sum() >= 3 and rounds >= 1
    with torch.no_grad():
        assert (model(adv[fooled]).argmax(1) != y[survivors][fooled]).all()  # each example really fools
    assert (adv - x[survivors]).abs().amax() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    left = survivors.clone()
    left[survivors.nonzero().flatten()[fooled]] = False
    if left.any():
        assert independent_pgd(model, x[left], y[left], EPS).sum() <= 1


def test_the_escalation_row_is_the_worst_case_with_the_escalation(correct):
    model, x, y = correct
    torch.manual_seed(0)
    weak = PGD(steps=10, alpha=EPS / 100).perturb(model, x, y, EPS)
    with torch.no_grad():
        weak_preds = model(weak).argmax(1)
    uint8 = (x * 255).round().to(torch.uint8)  # robench stores images as uint8; x came from them
    torch.manual_seed(0)
    metrics = escalation_metrics(model, uint8, y, y.clone(), weak_preds, EPS, rounds=1, device="cpu")
    preds = torch.tensor(metrics["adv_pred"])
    assert metrics["escalated"] == int((weak_preds == y).sum())
    assert metrics["escalation_fooled"] == int(((weak_preds == y) & (preds != y)).sum()) >= 3
    assert torch.equal(preds[weak_preds != y], weak_preds[weak_preds != y])  # the attack's own hits are kept
    assert metrics["robust_acc"] == pytest.approx((preds == y).float().mean().item())


def test_a_targeted_escalation_aims_at_the_same_targets(correct):
    model, x, y = correct
    targets = (y + 1) % 7
    torch.manual_seed(0)
    adv, fooled, _ = escalate(model, x[:16], y[:16], 8 / 255, rounds=1, targets=targets[:16])
    with torch.no_grad():
        answers = model(adv).argmax(1)
    assert fooled.any()
    assert torch.equal(answers[fooled], targets[:16][fooled])


def test_labels_name_the_cap_and_the_targeted_attack():
    class Plugin:
        def __init__(self, family, norm="Linf"):
            self.family, self.norm = family, norm

        def targets(self, model, images, labels):
            return labels

    class Planned:
        def __init__(self, label, plugin):
            self.label, self.plugin = label, plugin

    attacks = [Planned("fgsm", Plugin("single-step")), Planned("pgd:target=benign", Plugin("targeted")),
               Planned("pgd_l2", Plugin("iterative", "L2"))]
    assert [name for name, _ in labels_for(attacks, 3)] == ["escalation", "escalation[pgd:target=benign]"]
    assert label(5) == "escalation(rounds=5)"
    assert labels_for([Planned("pgd_l2", Plugin("iterative", "L2"))], 3) == []


def test_a_run_with_a_weak_attack_flags_escalation_moved(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--dataset", "synthetic", "--subset", "200", "--epochs", "2", "--seeds", "0", "--strategies",
                 "full", "--attacks", "pgd:alpha=0.00005", "--eps", "0.02", "--quiet", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    pgd = next(r for r in rows if r["attack_name"] == "pgd")
    escalated = next(r for r in rows if r["attack"] == "escalation")
    assert escalated["escalation_fooled"] >= 2 and escalated["robust_acc"] < pgd["robust_acc"]
    page = (out / "leaderboard.md").read_text()
    assert "escalation-moved" in page and "## Escalation" in page
    assert f"{escalated['escalation_fooled']} of {escalated['escalated']}" in page
    assert "| escalation@" not in page.split("## Escalation")[0]  # no attack column of its own


@pytest.mark.parametrize("value, words", [("0", "--escalation '0' is not a number of rounds from 1 to 8"),
                                          ("many", "--escalation 'many' is not a number of rounds"),
                                          ("9", "from 1 to 8")])
def test_a_bad_cap_is_one_line(tmp_path, capsys, value, words):
    code = main(["run", "--dataset", "synthetic", "--escalation", value, "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value, expected", [("2", 2), ('"off"', None), ("0", "--escalation '0' is not a number of rounds")])
def test_a_config_file_takes_the_cap_as_a_number_or_off(tmp_path, value, expected):
    from robench.cli.parser import build_parser
    from robench.cli.run_command import config_from_args
    from robench.errors import RobenchError

    path = tmp_path / "run.toml"
    path.write_text(f'dataset = "synthetic"\nescalation = {value}\n')
    argv = ["run", "--config", str(path)]
    if isinstance(expected, str):
        with pytest.raises(RobenchError, match=expected):
            config_from_args(build_parser().parse_args(argv), argv)
    else:
        assert config_from_args(build_parser().parse_args(argv), argv).escalation == expected
