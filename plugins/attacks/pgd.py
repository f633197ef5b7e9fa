"""PGD through torchattacks.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018. Threat model: L-inf, white box, pixel space [0, 1].
Step size defaults to 2.5 * eps / steps (Madry et al.'s rule), so the attack can walk from one
corner of the eps-ball to the other whatever eps is.
"""

from __future__ import annotations

import torchattacks

import robench
from robench.attack import Attack


class PGD(Attack):
    """Projected Gradient Descent (Madry et al. 2018), L-inf, with a random start."""

    name = "pgd"
    family = "iterative"

    def __init__(self, steps: int = 10, alpha: float | None = None, random_start: bool = True):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.steps, self.alpha, self.random_start = steps, alpha, random_start

    def perturb(self, model, images, labels, eps):
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=self.steps, random_start=self.random_start)
        return attack(images, labels)


@robench.hookimpl
def register_attacks(register):
    register(PGD)
