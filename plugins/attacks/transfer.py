"""Transfer attacks: PGD crafted on a surrogate model, evaluated on every model of the run.

Why: a parameter-efficient strategy (linear probe, VPT, LoRA) keeps a backbone anyone can
download, so an attacker who never sees the fine-tuned weights can still craft examples on the
public model (Ruan et al. 2024, "PETRobustness"; Papernot et al. 2016 for transfer attacks in
general). ``transfer:source=pretrained`` measures that grey-box threat: the surrogate is the
pretrained backbone with a linear head trained on the training split (robench trains it as the
``linear_probe`` strategy with its default recipe, and reuses the run's own linear probe when it has
one). ``transfer:source=STRATEGY`` crafts on another model of the run (same seed); several sources
give the page's transfer matrix.

The examples are the last iterate of L-inf PGD on the surrogate (``steps``, step size
``alpha``, default 2.5 * eps / steps), on cross-entropy by default as the transfer literature
does, or ``loss=margin``; with ``restarts=k`` the images the surrogate still answers correctly
are attacked again from a fresh random start. An example that has just crossed the surrogate's
boundary transfers worse than one pushed on, so there is no early exit here.
"""

from __future__ import annotations

import torch

import robench
from robench.attack import PRETRAINED, TransferAttack, check_loss, fools, pgd_steps

MAX_STEPS, MAX_RESTARTS = 100_000, 1_000


class Transfer(TransferAttack):
    """PGD crafted on a surrogate (the pretrained backbone and a linear head, or another strategy's model)."""

    name = "transfer"
    description = "L-inf PGD crafted on a surrogate (source=pretrained or a strategy of the run), evaluated on every model"
    norm = "Linf"

    def __init__(self, source: str = PRETRAINED, steps: int = 10, restarts: int = 1, loss: str = "ce",
                 alpha: float | None = None):
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be from 1 to {MAX_STEPS:,}, got {steps}")
        if not 1 <= restarts <= MAX_RESTARTS:
            raise ValueError(f"restarts must be from 1 to {MAX_RESTARTS:,}, got {restarts}")
        if alpha is not None and not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if not str(source).strip():
            raise ValueError(f"source must be {PRETRAINED} or the label of a strategy of the run, got an empty one")
        self.source, self.steps, self.restarts, self.alpha = str(source), steps, restarts, alpha
        self.loss = check_loss(loss)

    def craft(self, surrogate, images, labels, eps_values):
        for eps in eps_values:
            if eps == 0:
                yield eps, images
                continue
            alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
            adv = pgd_steps(surrogate, images, labels, eps, alpha, self.steps, self.loss)
            for _ in range(self.restarts - 1):
                with torch.no_grad():
                    left = (~fools(surrogate(adv), labels)).nonzero().flatten()
                if not len(left):
                    break
                adv[left] = pgd_steps(surrogate, images[left], labels[left], eps, alpha, self.steps, self.loss)
            yield eps, adv.detach()


@robench.hookimpl
def register_attacks(register):
    register(Transfer)
