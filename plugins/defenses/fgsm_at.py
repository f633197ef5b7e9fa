"""FGSM adversarial training with a random start ("fast adversarial training").

Wong, Rice and Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020.
Each training batch is replaced by one FGSM step from a random point of the eps-ball:
    delta ~ U(-eps, eps),  x0 = clip_[0,1](x + delta),
    x' = clip_[0,1](clip_[x-eps, x+eps](x0 + alpha * sign(grad_x0 CE(f(x0), y))))
with alpha = 1.25 * eps, the paper's step (without the random start, or with a larger alpha,
single-step training "catastrophically overfits": it stops resisting PGD). The gradient is
robench.attack.gradient, the one robench's FGSM and PGD attacks step along. Threat model: L-inf, pixel space
[0, 1]; eps defaults to 0.01, the seed study's smaller attack eps (about 2.55/255).
"""

from __future__ import annotations

import torch

import robench
from robench.attack import gradient, project
from robench.defense import Defense, check_warmup


class FGSMAT(Defense):
    """FGSM adversarial training with a random start (Wong et al. 2020), L-inf, one step per batch."""

    name = "fgsm_at"

    def __init__(self, eps: float = 0.01, alpha: float | None = None, warmup_epochs: float = 0):
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (pixel units, e.g. 0.01 or 2/255), got {eps}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.eps, self.alpha = eps, alpha
        self.warmup_epochs = check_warmup(warmup_epochs)

    def perturb(self, model, images, labels):
        alpha = self.alpha if self.alpha is not None else 1.25 * self.eps
        start = (images + torch.empty_like(images).uniform_(-self.eps, self.eps)).clamp(0, 1)
        return project(start + alpha * gradient(model, start, labels, "ce").sign(), images, self.eps)


@robench.hookimpl
def register_defenses(register):
    register(FGSMAT)
