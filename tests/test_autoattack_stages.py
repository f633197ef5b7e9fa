"""AutoAttack's stages at the cost of their work: each image leaves APGD once fooled, APGD-T and FAB-T
aim at MALT's nearest targets, and the result is never weaker than torchattacks' AutoAttack on
the same images (robench_plugins.attacks.autoattack.stages)."""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from robench_plugins.attacks.autoattack import AutoAttack
from robench_plugins.attacks.autoattack.stages import AllFooled, RowsUntilFooled, TargetedAPGD, malt_targets
from tests.test_early_exit import RowCounter


def test_rows_until_fooled_computes_only_the_images_left_and_keeps_each_first_fooling_input():
    model = RowCounter(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    with torch.no_grad():
        model.model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
        model.model[1].bias.zero_()
    labels = torch.tensor([0, 1, 2])
    watched = RowsUntilFooled(model)
    watched.start(labels)
    first = torch.tensor([[5.0, 0, 0, 0], [9.0, 0, 0, 0], [0, 0, 1, 0]])  # the second image is answered 0: fooled
    logits = watched(first)
    assert torch.equal(logits, model.model(first)) and watched.fooled.tolist() == [False, True, False]
    model.rows = 0
    second = torch.tensor([[0, 0, 7.0, 0], [0, 3.0, 0, 0], [0, 0, 2, 0]])  # the first image now fooled too
    logits = watched(second)
    assert model.rows == 2  # the fooled second image is not computed again
    assert torch.equal(logits[1], torch.tensor([0.0, 1.0, 0.0]))  # answered as correct: APGD keeps its first example
    assert torch.equal(watched.first_fooled[0], second[0]) and torch.equal(watched.first_fooled[1], first[1])
    with pytest.raises(AllFooled):
        watched(torch.tensor([[0, 0, 7.0, 0], [0, 3.0, 0, 0], [9.0, 0, 0, 0]]))
    assert torch.equal(watched.first_fooled[2], torch.tensor([9.0, 0, 0, 0]))


def test_malt_ranks_targets_by_the_linear_distance_to_their_boundary():
    """On a linear model the ranking is exact: (z_t - z_y) / ||w_t - w_y||_1, largest first."""
    torch.manual_seed(0)
    linear = nn.Linear(12, 6)
    model = nn.Sequential(nn.Flatten(), linear)
    x, y = torch.rand(5, 3, 2, 2), torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        z = model(x)
        w = linear.weight
        score = (z - z.gather(1, y[:, None])) / (w[None] - w[y][:, None]).abs().sum(-1).clamp_min(1e-12)
        score[torch.arange(5), y] = -torch.inf
    expected = score.argsort(dim=1, descending=True)[:, :3]
    assert torch.equal(malt_targets(model, x, y, 3), expected)
    assert not (malt_targets(model, x, y, 5) == y[:, None]).any()


def test_targeted_apgd_attacks_the_target_it_is_given(trained):
    model, x, y = trained
    x, y = x[:6], y[:6]
    aimed = (y + 3) % 7
    attack = TargetedAPGD(model, norm="Linf", eps=8 / 255, steps=3, n_restarts=1, n_classes=7, seed=0)
    used = []
    original = attack.dlr_loss_targeted

    def spy(logits, labels, target):
        used.append(target.clone())
        return original(logits, labels, target)

    attack.dlr_loss_targeted = spy
    attack.attack_targets(x, y, aimed)
    assert used and all(torch.equal(target, aimed) for target in used)


@pytest.fixture(scope="module")
def correct(trained):
    model, x, y = trained
    with torch.no_grad():
        right = (model(x).argmax(1) == y).nonzero().flatten()[:12]
    return model, x[right], y[right]


@pytest.mark.slow  # FAB-T and Square on the survivors, both ways: about 30 s on one core
def test_fast_autoattack_is_never_weaker_than_torchattacks_per_image_and_computes_less(correct):
    """At eps where the micro ViT keeps some images and loses others, every image torchattacks'
    AutoAttack fools (all 6 targets) is fooled by robench's (MALT's 3), with fewer image rows computed."""
    model, x, y = correct
    for eps in (8 / 255, 16 / 255):  # PGD-20 fools 8 and 18 of 24 there
        counted, found = RowCounter(model), {}
        for early in (True, False):
            counted.rows = 0
            adv = AutoAttack(steps=10, n_queries=30, early_exit=early).perturb(counted, x, y, eps)
            assert (adv - x).abs().max() <= eps + 1e-6
            with torch.no_grad():
                found[early] = (model(adv).argmax(1) != y, counted.rows)
        (fast, fast_rows), (reference, reference_rows) = found[True], found[False]
        assert 0 < reference.sum() < len(y), "the eps should leave survivors and fool some"
        assert not (reference & ~fast).any(), f"eps {eps}: images only the reference fooled"
        assert fast_rows < reference_rows


@pytest.mark.slow  # FAB on a CPU: about 6 s
def test_early_exit_off_is_torchattacks_autoattack_bitwise(correct):
    model, x, y = correct
    x, y = x[:4], y[:4]
    ours = AutoAttack(steps=2, n_queries=3, early_exit=False).perturb(model, x, y, 1 / 255)
    theirs = torchattacks.AutoAttack(model, norm="Linf", eps=1 / 255, version="standard", n_classes=7, seed=0)
    for component in theirs._autoattack.attacks:
        if hasattr(component, "steps"):
            component.steps = 2
        if hasattr(component, "n_queries"):
            component.n_queries = 3
    assert torch.equal(ours, theirs(x, y))
