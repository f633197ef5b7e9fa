"""FGSM, robench's reference implementation.

Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
    x' = clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))
Threat model: L-inf, white box, pixel space [0, 1]. The result is bitwise identical to
``torchattacks.FGSM`` at the same eps. The gradient does not depend on eps, so a sweep over k
values costs one forward+backward and k cheap additions, not k backward passes.
"""

import torch
from torch import nn

import robench
from robench.attack import Attack


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015), L-inf, one gradient step."""

    name = "fgsm"
    family = "single-step"

    def perturb(self, model, images, labels, eps):
        return _step(images, gradient_sign(model, images, labels), eps)

    def sweep(self, model, images, labels, eps_values):
        sign = gradient_sign(model, images, labels)
        for eps in eps_values:
            yield eps, _step(images, sign, eps)


def gradient_sign(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sign(grad_x CE(model(x), y)): FGSM's direction, shared with FGSM adversarial training."""
    images = images.clone().detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(images), labels)
    (grad,) = torch.autograd.grad(loss, images)
    return grad.sign()


def _step(images: torch.Tensor, sign: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(images + eps * sign, min=0, max=1).detach()


@robench.hookimpl
def register_attacks(register):
    register(FGSM)
