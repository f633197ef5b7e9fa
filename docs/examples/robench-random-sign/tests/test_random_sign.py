"""The attack honours robench's contract, checked on robench's own 0.1M-parameter test ViT."""

import torch
from robench_random_sign import RandomSign

from robench.testing import MICRO, BackboneSpec, Normalized, create_backbone


def micro_model():
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    return Normalized(vit, mean, std).eval().requires_grad_(False)


def test_stays_in_pixel_range_and_eps_ball():
    images, labels = torch.rand(16, 3, 32, 32), torch.randint(0, 7, (16,))
    adversarial = RandomSign(draws=3).perturb(micro_model(), images, labels, eps=0.03)
    assert adversarial.shape == images.shape
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial - images).abs().max() <= 0.03 + 1e-6


def test_eps_zero_changes_nothing():
    images, labels = torch.rand(4, 3, 32, 32), torch.randint(0, 7, (4,))
    assert torch.equal(RandomSign().perturb(micro_model(), images, labels, eps=0.0), images)
