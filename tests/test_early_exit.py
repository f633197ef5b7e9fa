"""PGD with early exit: each image keeps its first fooling iterate and stops costing compute; it is
never weaker than the last-iterate PGD (torchattacks') with the same seed, and computes less."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from robench.attack import pgd_first_fooled
from robench_plugins.attacks.pgd import PGD

EPS = (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


class RowCounter(nn.Module):
    """The model, counting the image rows of every forward pass (with and without gradients)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += len(x)
        return self.model(x)


@pytest.fixture(scope="module")
def correct(trained):
    """The trained micro ViT and 48 test images it gets right: what robench attacks."""
    model, x, y = trained
    with torch.no_grad():
        right = (model(x).argmax(1) == y).nonzero().flatten()[:48]
    return model, x[right], y[right]


def robust(model, adv, labels) -> float:
    with torch.no_grad():
        return (model(adv).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("eps", EPS)
def test_early_exit_is_never_weaker_than_torchattacks_pgd_with_the_same_seed(correct, eps):
    model, x, y = correct
    torch.manual_seed(5)
    ours = PGD(steps=10, loss="ce").perturb(model, x, y, eps)
    torch.manual_seed(5)
    theirs = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)(x, y)
    assert robust(model, ours, y) <= robust(model, theirs, y)
    assert (ours - x).abs().max() <= eps + 1e-6 and ours.min() >= 0 and ours.max() <= 1


@pytest.mark.parametrize("loss", ["margin", "dlr"])
def test_early_exit_is_never_weaker_than_the_last_iterate_on_every_loss(correct, loss):
    model, x, y = correct
    for eps in EPS[1:4]:
        torch.manual_seed(1)
        early = PGD(steps=10, loss=loss).perturb(model, x, y, eps)
        torch.manual_seed(1)
        last = PGD(steps=10, loss=loss, early_exit=False).perturb(model, x, y, eps)
        assert robust(model, early, y) <= robust(model, last, y)


def test_every_image_reported_fooled_is_fooled_and_the_rest_keep_their_last_iterate(correct):
    model, x, y = correct
    torch.manual_seed(2)
    adv, fooled = pgd_first_fooled(model, x, y, 2 / 255, 0.5 / 255, 10, "margin")
    with torch.no_grad():
        predicted = model(adv).argmax(1)
    assert fooled.any() and (predicted[fooled] != y[fooled]).all()
    assert not fooled.all()  # some survive ten steps at 2/255: the test sees both kinds


def test_it_stops_computing_for_fooled_images(correct):
    model, x, y = correct
    counted = RowCounter(model)
    torch.manual_seed(0)
    pgd_first_fooled(counted, x, y, 16 / 255, 4 / 255, 10, "margin")
    early_rows = counted.rows
    counted.rows = 0
    torch.manual_seed(0)
    PGD(steps=10, alpha=4 / 255, early_exit=False).perturb(counted, x, y, 16 / 255)
    assert counted.rows == 10 * len(x)  # the last-iterate PGD: every image, every step
    assert early_rows < 0.6 * counted.rows  # at 16/255 the micro ViT falls within a few steps


def test_a_targeted_attack_stops_when_the_target_is_reached(correct):
    model, x, y = correct
    target = torch.full_like(y, 5)
    keep = y != 5
    torch.manual_seed(0)
    adv, reached = pgd_first_fooled(model, x[keep], y[keep], 32 / 255, 8 / 255, 10, "margin", targets=target[keep])
    with torch.no_grad():
        predicted = model(adv).argmax(1)
    assert reached.any() and (predicted[reached] == 5).all()


def test_restarts_attack_only_what_survived_and_never_lose_a_fooled_image(correct):
    model, x, y = correct
    weak = dict(steps=2, alpha=0.2 / 255)
    torch.manual_seed(4)
    once = PGD(**weak).perturb(model, x, y, 1 / 255)
    torch.manual_seed(4)
    thrice = PGD(**weak, restarts=3).perturb(model, x, y, 1 / 255)
    assert robust(model, thrice, y) <= robust(model, once, y)


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_autoattack_ends_once_every_image_is_fooled(correct):
    """At 64/255 every image falls within APGD-CE's first iterations: each leaves the attack once
    fooled, and the whole costs a fraction of torchattacks' AutoAttack. (Where images survive,
    tests/test_autoattack_stages.py checks it is never weaker, per image.)"""
    from robench_plugins.attacks.autoattack import AutoAttack

    model, x, y = correct
    x, y = x[:16], y[:16]
    counted, runs = RowCounter(model), {}
    for early in (True, False):
        counted.rows = 0
        adv = AutoAttack(steps=10, n_queries=10, early_exit=early).perturb(counted, x, y, 64 / 255)
        runs[early] = (robust(model, adv, y), counted.rows)
        assert (adv - x).abs().max() <= 64 / 255 + 1e-6
    (early_acc, early_rows), (plain_acc, plain_rows) = runs[True], runs[False]
    assert early_acc == plain_acc == 0 and early_rows < 0.6 * plain_rows
