"""AutoAttack (standard version) through torchattacks.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020. Threat model: L-inf, white box, pixel space [0, 1].
The standard version runs APGD-CE, then targeted APGD-DLR, targeted FAB and Square on the
images that are still robust; an image counts as robust only if it survives all four.

Two settings differ from torchattacks' defaults, each for a correct number:
- the targeted attacks aim at every other class, n_classes - 1 of them; torchattacks assumes
  10 classes and crashes on HAM10000's 7 (auto-attack issues #70, #76, #110). n_classes is read
  from the width of the model's output, so any number of classes works (at least 4: the
  targeted DLR loss reads the 4th largest logit);
- APGD and FAB take ``steps=100`` iterations, as the reference implementation's standard
  version does (torchattacks uses 10), and Square 5000 queries. Lower both for quick runs.
The random starts are seeded (``seed``), so a run is repeatable.

Cost on robust models (``early_exit``, default on; its module stages): the same
torchattacks components, with each image leaving APGD's iterations once fooled (its trajectory
does not depend on the other images) and APGD-T and FAB-T aimed at the ``targets`` classes (3 by
default) nearest to the boundary by MALT's ranking (Melamed et al. 2024) instead of all n - 1. On
an undefended model everything falls within an iteration or two of APGD-CE; on a defended one the
survivors decide the cost. ``early_exit=false`` runs torchattacks' AutoAttack itself, all n - 1
targets in the order of the logits: the reference. ``python bench/autoattack_defended.py``
compares the two per image on a real-data defended model, with PGD-100x5's time beside them;
``python bench/autoattack_cost.py`` the saving on an undefended one.
"""

from __future__ import annotations

import torch
import torchattacks

import robench
from robench.attack import Attack
from robench_plugins.attacks.autoattack.stages import fast_autoattack

MIN_CLASSES = 4


class AutoAttack(Attack):
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square, L-inf."""

    name = "autoattack"
    family = "ensemble"
    norm = "Linf"

    def __init__(self, steps: int = 100, n_queries: int = 5000, seed: int = 0, early_exit: bool = True, targets: int = 3):
        if not (1 <= steps <= 100_000 and 1 <= n_queries <= 1_000_000):  # beyond them a typo, not an evaluation
            raise ValueError(f"steps must be from 1 to 100,000 and n_queries from 1 to 1,000,000, got steps={steps}, "
                             f"n_queries={n_queries}")
        if not 1 <= targets <= 1_000:
            raise ValueError(f"targets must be from 1 to 1,000 (target classes per image), got {targets}")
        self.steps, self.n_queries, self.seed, self.early_exit, self.targets = steps, n_queries, seed, early_exit, targets

    def for_dataset(self, classes, malignant):
        """Refuse a dataset of fewer than 4 classes before anything trains, not mid-run."""
        if len(classes) < MIN_CLASSES:
            raise ValueError(f"autoattack's targeted DLR loss needs at least {MIN_CLASSES} classes, this dataset has "
                             f"{len(classes)}: use pgd (margin loss) with restarts, e.g. pgd:steps=100:restarts=5, and square")

    def perturb(self, model, images, labels, eps):
        n_classes = count_classes(model, images)
        if not self.early_exit:
            return self.build(model, eps, n_classes)(images, labels)
        if n_classes < MIN_CLASSES:
            raise ValueError(f"autoattack needs a model with at least {MIN_CLASSES} classes, this one has {n_classes}")
        return fast_autoattack(model, images, labels, eps, steps=self.steps, n_queries=self.n_queries, seed=self.seed,
                               targets=min(self.targets, n_classes - 1))

    def build(self, model, eps: float, n_classes: int) -> torchattacks.AutoAttack:
        if n_classes < MIN_CLASSES:
            raise ValueError(f"autoattack needs a model with at least {MIN_CLASSES} classes, this one has {n_classes}")
        attack = torchattacks.AutoAttack(model, norm=self.norm, eps=eps, version="standard", n_classes=n_classes, seed=self.seed)
        for component in attack._autoattack.attacks:  # APGD, APGDT, FAB, Square
            if hasattr(component, "steps"):
                component.steps = self.steps
            if hasattr(component, "n_queries"):
                component.n_queries = self.n_queries
        return attack


def count_classes(model, images: torch.Tensor) -> int:
    """The width of the model's output, from one forward pass of one image."""
    with torch.no_grad():
        return model(images[:1]).shape[1]


@robench.hookimpl
def register_attacks(register):
    register(AutoAttack)
