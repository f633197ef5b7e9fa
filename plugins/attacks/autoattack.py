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
"""

from __future__ import annotations

import torch
import torchattacks

import robench
from robench.attack import Attack

MIN_CLASSES = 4


class AutoAttack(Attack):
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square, L-inf."""

    name = "autoattack"
    family = "ensemble"
    norm = "Linf"

    def __init__(self, steps: int = 100, n_queries: int = 5000, seed: int = 0):
        if steps < 1 or n_queries < 1:
            raise ValueError(f"steps and n_queries must be >= 1, got steps={steps}, n_queries={n_queries}")
        self.steps, self.n_queries, self.seed = steps, n_queries, seed

    def for_dataset(self, classes, malignant):
        """Refuse a dataset of fewer than 4 classes before anything trains, not mid-run."""
        if len(classes) < MIN_CLASSES:
            raise ValueError(f"autoattack's targeted DLR loss needs at least {MIN_CLASSES} classes, this dataset has "
                             f"{len(classes)}: use pgd (margin loss) with restarts, e.g. pgd:steps=100:restarts=5, and square")

    def perturb(self, model, images, labels, eps):
        attack = self.build(model, eps, n_classes=count_classes(model, images))
        return attack(images, labels)

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
