"""Attacks: FGSM against the analytic answer and torchattacks, sweeps, and the evaluator."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from robench.attack import Attack
from robench.evaluate import attack_sweep, predict
from robench_plugins.attacks.fgsm import FGSM
from robench_plugins.attacks.pgd import PGD


def test_fgsm_equals_the_analytic_answer_on_a_linear_model():
    torch.manual_seed(0)
    linear = nn.Linear(12, 3)
    model = nn.Sequential(nn.Flatten(), linear).eval()
    images = torch.rand(5, 3, 2, 2)
    labels = torch.tensor([0, 1, 2, 0, 1])
    # d CE / d x = W^T (softmax(Wx + b) - onehot(y)), computed by hand
    probs = torch.softmax(images.flatten(1) @ linear.weight.T + linear.bias, dim=1)
    grad = (probs - nn.functional.one_hot(labels, 3)) @ linear.weight
    expected = torch.clamp(images + 0.1 * grad.sign().view_as(images), 0, 1)
    assert torch.equal(FGSM().perturb(model, images, labels, 0.1), expected)


def test_fgsm_is_bitwise_identical_to_torchattacks_on_a_vit(micro_model):
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(8) % 7
    for eps in (0.01, 2 / 255):
        ours = FGSM().perturb(micro_model, images, labels, eps)
        theirs = torchattacks.FGSM(micro_model, eps=eps)(images, labels)
        assert torch.equal(ours, theirs)
        assert not torch.equal(ours, images)


def test_one_gradient_sweep_equals_separate_calls(micro_model):
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(6)
    eps_values = [0.0, 0.004, 0.01, 0.03]
    swept = dict(FGSM().sweep(micro_model, images, labels, eps_values))
    for eps in eps_values:
        assert torch.equal(swept[eps], FGSM().perturb(micro_model, images, labels, eps))
    assert torch.equal(swept[0.0], images)


def test_pgd_stays_in_the_eps_ball_and_in_range(micro_model):
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(4)
    torch.manual_seed(0)
    adv = PGD(steps=3).perturb(micro_model, images, labels, 0.02)
    assert (adv - images).abs().max() <= 0.02 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, images)


def _uint8(n, seed):
    return (torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 255).to(torch.uint8)


def test_eps_zero_reproduces_clean_accuracy_and_robust_never_exceeds_clean(micro_model):
    images = _uint8(40, 4)
    clean_preds = predict(micro_model, images, 16, "cpu")
    labels = torch.where(torch.arange(40) % 2 == 0, clean_preds, (clean_preds + 1) % 7)  # half correct
    metrics = attack_sweep(micro_model, FGSM(), [0.0, 0.05], images, labels, clean_preds, 16, "cpu")
    assert metrics[0.0]["robust_acc"] == pytest.approx(0.5)
    assert metrics[0.0]["acc_on_correct"] == 1.0
    assert metrics[0.0]["n_clean_correct"] == 20
    assert metrics[0.05]["robust_acc"] <= 0.5
    assert metrics[0.05]["robust_acc"] == pytest.approx(0.5 * metrics[0.05]["acc_on_correct"])
    assert metrics[0.05]["attack_success_rate"] == pytest.approx(1 - metrics[0.05]["acc_on_correct"])


class _Cheater(Attack):
    name = "cheater"

    def perturb(self, model, images, labels, eps):
        return torch.clamp(images + 2 * eps, 0, 1)


def test_an_attack_that_leaves_its_eps_ball_is_refused(micro_model):
    images = _uint8(4, 5)
    preds = predict(micro_model, images, 4, "cpu")
    with pytest.raises(ValueError, match="exceeded eps"):
        attack_sweep(micro_model, _Cheater(), [0.01], images, preds, preds, 4, "cpu")
