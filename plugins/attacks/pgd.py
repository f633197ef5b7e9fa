"""PGD through torchattacks.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. Threat model: L-inf, white box, pixel space [0, 1].
Step size defaults to 2.5 * eps / steps (Madry et al.'s rule), so the attack can walk from one
corner of the eps-ball to the other whatever eps is. With ``restarts=k`` the images that survive
are attacked again from a fresh random start, up to k runs in all; each image keeps the first
adversarial example that fools the model, so it counts as robust only if it survives every run.
"""

from __future__ import annotations

import torch
import torchattacks

import robench
from robench.attack import Attack


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018), L-inf, with a random start."""

    name = "pgd"
    family = "iterative"

    def __init__(self, steps: int = 10, alpha: float | None = None, random_start: bool = True, restarts: int = 1):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {restarts}")
        if restarts > 1 and not random_start:
            raise ValueError("restarts > 1 needs random_start=true: without it every run is the same")
        self.steps, self.alpha, self.random_start, self.restarts = steps, alpha, random_start, restarts

    def perturb(self, model, images, labels, eps):
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=self.steps, random_start=self.random_start)
        adv = attack(images, labels)
        for _ in range(self.restarts - 1):
            with torch.no_grad():
                survivors = (model(adv).argmax(1) == labels).nonzero().flatten()
            if not len(survivors):
                break
            adv[survivors] = attack(images[survivors], labels[survivors])
        return adv


@robench.hookimpl
def register_attacks(register):
    register(PGD)
