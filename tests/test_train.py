"""The training loop: what must change changes, what must not does not, and the feature cache."""

from __future__ import annotations

import copy

import pytest
import torch

from robench.pipeline.models import Normalized
from robench.pipeline.train import augment, class_weights, head_only, train
from robench.strategy import Recipe
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.linear_probe import LinearProbe


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    labels = torch.arange(n) % 7
    return images, labels


def _train(vit, mean, std, strategy, recipe, cached=True, seed=0):
    adapted = strategy.adapt(vit)
    model = Normalized(adapted, mean, std)
    result = train(model, strategy, recipe, _data(28, 1), _data(14, 2), 7, seed, torch.device("cpu"), use_cached_features=cached)
    return model, result


def test_linear_probe_on_cached_features_equals_training_through_the_frozen_backbone(micro_vit):
    vit, mean, std = micro_vit
    recipe = LinearProbe.recipe.override(epochs=3, batch_size=8)
    fast, fast_result = _train(copy.deepcopy(vit), mean, std, LinearProbe(), recipe, cached=True)
    slow, slow_result = _train(copy.deepcopy(vit), mean, std, LinearProbe(), recipe, cached=False)
    assert fast_result.used_cached_features and not slow_result.used_cached_features
    for (name, a), (_, b) in zip(fast.model.head.state_dict().items(), slow.model.head.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert fast_result.best_epoch == slow_result.best_epoch


def test_the_kept_epoch_is_the_best_on_validation(micro_vit):
    vit, mean, std = micro_vit
    _, result = _train(vit, mean, std, Full(), Recipe(epochs=3, batch_size=14, lr=1e-3, warmup_epochs=1))
    assert 1 <= result.best_epoch <= 3 and 0 <= result.best_val_bacc <= 1


def test_training_is_deterministic_for_a_seed(micro_vit):
    vit, mean, std = micro_vit
    recipe = Recipe(epochs=2, batch_size=7, lr=1e-3, augment=True)
    a, _ = _train(copy.deepcopy(vit), mean, std, Full(), recipe, seed=3)
    b, _ = _train(copy.deepcopy(vit), mean, std, Full(), recipe, seed=3)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_head_only_detection(micro_vit):
    vit, _, _ = micro_vit
    assert head_only(LinearProbe().adapt(vit))
    assert not head_only(Full().adapt(vit))


def test_augment_is_one_of_the_eight_symmetries_per_image():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = augment(images, torch.Generator().manual_seed(0))
    for original, augmented in zip(images, out):
        candidates = [t for k in range(4) for t in (torch.rot90(original, k, (-2, -1)), torch.rot90(original, k, (-2, -1)).flip(-1))]
        assert any(torch.equal(augmented, c) for c in candidates)


def test_balanced_class_weights_are_inverse_frequency():
    labels = torch.tensor([5, 5, 5, 0])
    weights = class_weights(labels, 7, "balanced")
    assert weights[5] == pytest.approx(4 / (7 * 3)) and weights[0] == pytest.approx(4 / 7)
    assert weights[1] == 0
    assert class_weights(labels, 7, "none") is None


def test_a_diverging_loss_stops_with_a_clear_message(micro_vit):
    from robench.pipeline.train import TrainingError

    vit, mean, std = micro_vit
    with pytest.raises(TrainingError, match="lower the learning rate"):
        _train(vit, mean, std, Full(), Recipe(epochs=2, batch_size=7, lr=1e30, warmup_epochs=0, optimizer="sgd"))
