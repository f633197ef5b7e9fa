"""The defense honours robench's contract, checked on robench's own 0.1M-parameter test ViT."""

import torch
from robench_goodfellow_at import GoodfellowAT

from robench.testing import MICRO, BackboneSpec, Normalized, create_backbone


def micro_model():
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    return Normalized(vit, mean, std).eval().requires_grad_(False)


def test_examples_stay_in_pixel_range_and_eps_ball_and_move():
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 7, (8,))
    adversarial = GoodfellowAT(eps=0.03).perturb(micro_model(), images, labels)
    assert adversarial.shape == images.shape
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (adversarial - images).abs().max() <= 0.03 + 1e-6
    assert (adversarial - images).abs().max() > 0.02  # a full FGSM step, not a no-op


def test_loss_mixes_clean_and_adversarial_by_clean_weight():
    model, criterion = micro_model(), torch.nn.functional.cross_entropy
    images, labels = torch.rand(8, 3, 32, 32), torch.randint(0, 7, (8,))
    adversarial = GoodfellowAT(eps=0.03).perturb(model, images, labels)
    clean_loss, adversarial_loss = criterion(model(images), labels), criterion(model(adversarial), labels)
    mixed = GoodfellowAT(eps=0.03, clean_weight=0.25).loss(model, images, adversarial, labels, criterion)
    assert torch.allclose(mixed, 0.25 * clean_loss + 0.75 * adversarial_loss)
