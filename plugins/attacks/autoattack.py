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

Early exit (``early_exit``, default on). torchattacks' AutoAttack already attacks, with each
component, only the images the components before it left correct. Inside APGD-CE, its first and
(on an undefended model) only busy component, it would run all 100 iterations although every
image is fooled after one or two. robench wraps the model it gives APGD-CE: the wrapper keeps
each image's first input the model got wrong, and once every image of the batch has been wrong
at some iterate it ends the attack and returns those inputs, each an adversarial example within
eps that the model misclassifies. Nothing else is skipped: a batch with one image still correct
runs exactly as torchattacks runs it (APGD-CE's iterations, then APGD-T, FAB-T and Square on the
survivors), so early exit is never weaker (tested) and only saves the iterations after the last
image fell. ``python bench/autoattack_cost.py`` measures the saving on a real-data model.
"""

from __future__ import annotations

import torch
import torchattacks
from torch import nn

import robench
from robench.attack import Attack, fools

MIN_CLASSES = 4


class AutoAttack(Attack):
    """AutoAttack, standard version (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square, L-inf."""

    name = "autoattack"
    family = "ensemble"
    norm = "Linf"

    def __init__(self, steps: int = 100, n_queries: int = 5000, seed: int = 0, early_exit: bool = True):
        if not (1 <= steps <= 100_000 and 1 <= n_queries <= 1_000_000):  # beyond them a typo, not an evaluation
            raise ValueError(f"steps must be from 1 to 100,000 and n_queries from 1 to 1,000,000, got steps={steps}, "
                             f"n_queries={n_queries}")
        self.steps, self.n_queries, self.seed, self.early_exit = steps, n_queries, seed, early_exit

    def for_dataset(self, classes, malignant):
        """Refuse a dataset of fewer than 4 classes before anything trains, not mid-run."""
        if len(classes) < MIN_CLASSES:
            raise ValueError(f"autoattack's targeted DLR loss needs at least {MIN_CLASSES} classes, this dataset has "
                             f"{len(classes)}: use pgd (margin loss) with restarts, e.g. pgd:steps=100:restarts=5, and square")

    def perturb(self, model, images, labels, eps):
        attack = self.build(model, eps, n_classes=count_classes(model, images))
        if not self.early_exit:
            return attack(images, labels)
        apgd_ce = attack._autoattack.attacks[0]
        watcher = apgd_ce.model = UntilAllFooled(model, labels)
        try:
            return attack(images, labels)
        except AllFooled:
            return watcher.first_fooled

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


class AllFooled(Exception):
    """Every image of the batch has been misclassified: the attack has nothing left to do."""


class UntilAllFooled(nn.Module):
    """The model, watching the forward passes of the whole batch (APGD-CE's, in its row order):
    keeps each image's first input the model got wrong, and raises AllFooled once all were."""

    def __init__(self, model: nn.Module, labels: torch.Tensor):
        super().__init__()
        self.model, self.labels = model, labels
        self.fooled = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        self.first_fooled = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if len(x) == len(self.labels):
            wrong = fools(logits.detach(), self.labels)
            if self.first_fooled is None:
                self.first_fooled = x.detach().clone()
            new = wrong & ~self.fooled
            self.first_fooled[new] = x.detach()[new]
            self.fooled |= wrong
            if self.fooled.all():
                raise AllFooled
        return logits


def count_classes(model, images: torch.Tensor) -> int:
    """The width of the model's output, from one forward pass of one image."""
    with torch.no_grad():
        return model(images[:1]).shape[1]


@robench.hookimpl
def register_attacks(register):
    register(AutoAttack)
