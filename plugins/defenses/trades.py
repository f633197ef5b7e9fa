"""TRADES: a trade-off between accuracy and robustness.

Zhang, Yu, Jiao, Xing, El Ghaoui and Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019 (reference code github.com/yaodongyu/TRADES, trades.py).
Instead of training on adversarial examples only, it minimises
    CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x')) ,
where x' maximises that KL within the eps-ball: PGD on the KL (not on the cross-entropy, so it
needs no label), started at x + 0.001 * N(0, 1), ``steps`` signed-gradient steps of ``alpha``,
each projected to the eps-ball and [0, 1]. The KL is summed over classes and averaged over the
batch, and gradients flow through both f(x) and f(x'), as in the reference code. ``beta``
weighs robustness against accuracy (6, the paper's CIFAR-10 setting; 1 is its other common
choice). Where the reference uses a plain cross-entropy for the first term, robench uses the
recipe's (class-weighted against HAM10000's imbalance), as every other model it trains does.
Defaults: eps 0.01 (the seed study's smaller attack eps), 10 steps as in the paper, alpha
2.5 * eps / steps (eps / 4 at 10 steps; the paper's 0.007 at eps 0.031 is about eps / 4.4).
Threat model: L-inf, pixel space [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import robench
from robench.attack import project
from robench.defense import Defense, check_warmup


class TRADES(Defense):
    """TRADES (Zhang et al. 2019): clean cross-entropy + beta * KL to the worst case in the eps-ball."""

    name = "trades"

    def __init__(self, eps: float = 0.01, beta: float = 6.0, steps: int = 10, alpha: float | None = None, warmup_epochs: float = 0):
        if not 0 < eps <= 1:
            raise ValueError(f"eps must be in (0, 1] (pixel units, e.g. 0.01 or 2/255), got {eps}")
        if not 0 <= beta < float("inf"):  # nan too
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        if not 1 <= steps <= 1_000:  # per training batch: beyond it a typo, not a defense
            raise ValueError(f"steps must be from 1 to 1,000 (per training batch), got {steps}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.eps, self.beta, self.steps, self.alpha = eps, beta, steps, alpha
        self.warmup_epochs = check_warmup(warmup_epochs)

    def perturb(self, model, images, labels):
        alpha = self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps
        with torch.no_grad():
            target = F.softmax(model(images), dim=1)
        adversarial = images + 0.001 * torch.randn_like(images)
        for _ in range(self.steps):
            adversarial = adversarial.detach().requires_grad_(True)
            divergence = F.kl_div(F.log_softmax(model(adversarial), dim=1), target, reduction="sum")
            (grad,) = torch.autograd.grad(divergence, adversarial)
            adversarial = project(adversarial + alpha * grad.sign(), images, self.eps)
        return adversarial

    def loss(self, model, clean, adversarial, labels, criterion):
        logits = model(clean)
        robust = F.kl_div(F.log_softmax(model(adversarial), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return criterion(logits, labels) + self.beta * robust


@robench.hookimpl
def register_defenses(register):
    register(TRADES)
