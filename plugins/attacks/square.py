"""Square Attack through torchattacks.

Andriushchenko, Croce, Flammarion and Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020. Threat model: L-inf, black box, pixel space
[0, 1]: it reads only the model's outputs (scores), never its gradients, so a model that
"hides" its gradients (gradient masking) does not fool it. That is its use here: when Square
beats the white-box attacks at the same eps, their numbers are not to be trusted.
``n_queries`` is the budget per image (5000 as in the paper; fewer for quick runs on CPU),
``p_init`` the initial fraction of pixels changed per square (0.8, the paper's L-inf default).
Seeded (seed 0 unless given), so a run is repeatable.
"""

from __future__ import annotations

import torchattacks

import robench
from robench.attack import Attack


class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020), L-inf, black box (random search on scores)."""

    name = "square"
    family = "iterative"
    norm = "Linf"
    black_box = True

    def __init__(self, n_queries: int = 5000, p_init: float = 0.8, seed: int = 0):
        if not 1 <= n_queries <= 1_000_000:  # the paper's budget is 10,000; beyond a million a typo
            raise ValueError(f"n_queries must be from 1 to 1,000,000, got {n_queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.n_queries, self.p_init, self.seed = n_queries, p_init, seed

    def perturb(self, model, images, labels, eps):
        attack = torchattacks.Square(model, norm=self.norm, eps=eps, n_queries=self.n_queries, p_init=self.p_init, seed=self.seed)
        return attack(images, labels)


@robench.hookimpl
def register_attacks(register):
    register(Square)
