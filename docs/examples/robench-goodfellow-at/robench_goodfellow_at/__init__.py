"""FGSM adversarial training on a mix of clean and adversarial images.

Goodfellow, Shlens and Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015, eq. 6:
    loss = w * CE(f(x), y) + (1 - w) * CE(f(x'), y),  x' = clip(x + eps * sign(grad_x CE(f(x), y)))
with w = 0.5. No random start: the variant that Wong et al. (2020) showed can overfit catastrophically.
"""

import robench
from robench.attack import gradient, project
from robench.defense import Defense


class GoodfellowAT(Defense):
    """FGSM adversarial training with a clean share (Goodfellow et al. 2015), L-inf."""

    name = "goodfellow_at"

    def __init__(self, eps: float = 0.01, clean_weight: float = 0.5):
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1], got {eps}")
        if not 0 <= clean_weight <= 1:
            raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight}")
        self.eps, self.clean_weight = eps, clean_weight

    def perturb(self, model, images, labels):
        # the model is in eval mode here, its parameters frozen; return [0, 1] images within eps
        return project(images + self.eps * gradient(model, images, labels, "ce").sign(), images, self.eps)

    def loss(self, model, clean, adversarial, labels, criterion):
        # back in the strategy's train mode; criterion is the recipe's (class-weighted) cross-entropy
        w = self.clean_weight
        return w * criterion(model(clean), labels) + (1 - w) * criterion(model(adversarial), labels)


@robench.hookimpl
def register_defenses(register):
    register(GoodfellowAT)
