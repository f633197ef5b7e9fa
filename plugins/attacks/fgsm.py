"""FGSM, robench's reference implementation.

Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015:
    x' = clip_[0,1](x + eps * sign(grad_x L(f(x), y)))
Threat model: L-inf, white box, pixel space [0, 1]. With ``loss=ce`` (the default: the paper's
and the seed study's FGSM) the result is bitwise identical to ``torchattacks.FGSM`` at the same
eps. ``loss=margin`` or ``dlr`` (robench.attack.attack_loss) steps along a gradient that does not
saturate on confident models. The gradient does not depend on eps, so a sweep over k values
costs one forward+backward and k cheap additions, not k backward passes.

Why cross-entropy stays the default here, unlike PGD's margin: FGSM is the seed study's attack,
and its number is comparable with the study's only under the study's loss; and for a single step
the margin is not uniformly stronger. On the real-data models of ``bench/attack_audit.py`` (every
built-in strategy, 120 images, eps 0.001 to 0.01) FGSM on the margin left fewer images correct
than on cross-entropy in 9 of 20 (strategy, eps) cells (VPT-shallow at eps 0.001: 2.50% against
10.83%) but more in 4 (full fine-tuning at eps 0.005: 3.33% against 0.83%). A page that wants the
strongest single step runs both, ``fgsm,fgsm:loss=margin``; its worst-case column takes, per
image, whichever fooled it.
"""

import torch

import robench
from robench.attack import Attack, check_loss, gradient


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015), L-inf, one gradient step."""

    name = "fgsm"
    family = "single-step"
    norm = "Linf"

    def __init__(self, loss: str = "ce"):
        self.loss = check_loss(loss)

    def perturb(self, model, images, labels, eps):
        return _step(images, gradient(model, images, labels, self.loss).sign(), eps)

    def sweep(self, model, images, labels, eps_values):
        sign = gradient(model, images, labels, self.loss).sign()
        for eps in eps_values:
            yield eps, _step(images, sign, eps)


def _step(images: torch.Tensor, sign: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.clamp(images + eps * sign, min=0, max=1).detach()


@robench.hookimpl
def register_attacks(register):
    register(FGSM)
