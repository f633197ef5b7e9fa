"""PGD adversarial training.

Madry, Makelov, Schmidt, Tsipras and Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018: minimise the loss on the worst case found by PGD with a random
start, min_theta E max_{||delta||_inf <= eps} CE(f(x + delta), y). The examples come from
robench.attack.pgd_steps, the very code robench's PGD attack evaluates the models with, on
the paper's cross-entropy loss (the attack's own default is the margin), with ``steps`` iterations (7 by default, Madry et al.'s CIFAR-10 setting)
of size ``alpha`` (default 2.5 * eps / steps, the paper's rule). Threat model: L-inf, pixel space
[0, 1]; eps defaults to 0.01, the seed study's smaller attack eps (about 2.55/255). Training
costs about steps + 1 forward and backward passes per batch instead of one.
"""

from __future__ import annotations

import robench
from robench.attack import pgd_steps
from robench.defense import Defense, check_warmup


class PGDAT(Defense):
    """PGD adversarial training (Madry et al. 2018), L-inf, random start, `steps` steps per batch."""

    name = "pgd_at"

    def __init__(self, eps: float = 0.01, steps: int = 7, alpha: float | None = None, warmup_epochs: float = 0):
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (pixel units, e.g. 0.01 or 2/255), got {eps}")
        if not 1 <= steps <= 1_000:  # per training batch: beyond it a typo, not a defense
            raise ValueError(f"steps must be from 1 to 1,000 (per training batch), got {steps}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.eps, self.steps, self.alpha = eps, steps, alpha
        self.warmup_epochs = check_warmup(warmup_epochs)

    def perturb(self, model, images, labels):
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        return pgd_steps(model, images, labels, self.eps, alpha, self.steps, "ce")


@robench.hookimpl
def register_defenses(register):
    register(PGDAT)
