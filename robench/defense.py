"""What a defense is: a training-time transformation of each batch (adversarial training).

A defense plugin subclasses :class:`Defense`, takes its options as keyword arguments of
``__init__`` and registers the class through the ``register_defenses`` hook. Any strategy
combines with any defense (``--defenses none,pgd_at:eps=0.01``); the pair is one model, whose
rows are labelled ``"vpt_deep + pgd_at(eps=0.01)"`` (see :func:`combined_label`).

Contract, enforced by :func:`defended_loss`, which the training loop calls once per batch:
- ``perturb`` sees the model being trained, in eval mode (dropout and VPT prompt dropout off, so
  they do not randomise the attack) with no parameter requiring gradients, taking images in
  [0, 1] (normalization is inside it), as an attack does (robench.attack). It returns the
  images to train on, in [0, 1] and, per image, within ``eps`` of the batch in its ``norm``.
- ``loss`` then runs with the model back in the strategy's train mode and returns the loss that
  is minimised: by default the training criterion on the adversarial images (Madry et al.);
  TRADES-like defenses combine clean and adversarial outputs.

eps warm-up: a defense with a ``warmup_epochs`` attribute above 0 (the built-ins take it as an
option, ``pgd_at:warmup_epochs=2``) trains on a radius that grows linearly to eps over that many
epochs, one increment per optimisation step (:meth:`Defense.at_fraction`). Adversarial training of a
pretrained ViT at full eps from the first batch can collapse it to one or two classes before it
has learned the task (Mo et al., NeurIPS 2022, ramp eps for ViTs for this reason).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from robench.attack import check_perturbation, exact_arithmetic, frozen

NONE = "none"  # the defense label of an undefended model, in rows and on the command line


class Defense:
    """A training-time defense. Subclasses set ``name``, an ``eps`` attribute and ``perturb``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    norm: ClassVar[str] = "Linf"
    eps: float  # radius of the examples it trains on, in [0, 1] pixel units
    warmup_epochs: float = 0.0  # epochs over which eps ramps up linearly (0: full eps from the start)

    def at_fraction(self, fraction: float) -> Defense:
        """This defense at ``fraction`` (in (0, 1]) of its eps, and of its ``alpha`` if one was given."""
        if fraction >= 1:
            return self
        scaled = copy.copy(self)
        scaled.eps = self.eps * fraction
        if getattr(self, "alpha", None) is not None:
            scaled.alpha = self.alpha * fraction
        return scaled

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The images to train on, made from a batch of [0, 1] images (model in eval mode)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The loss to minimise (model in train mode); ``criterion`` is the recipe's cross-entropy."""
        return criterion(model(adversarial), labels)


def check_warmup(warmup_epochs: float) -> float:
    """The ``warmup_epochs`` option, validated: a finite number of epochs >= 0."""
    if not 0 <= warmup_epochs < math.inf:  # nan too
        raise ValueError(f"warmup_epochs must be a finite number of epochs >= 0, got {warmup_epochs}")
    return float(warmup_epochs)


def warmup_fraction(defense: Defense, step: int, steps_per_epoch: int) -> float:
    """The fraction of eps a defense trains on at optimisation step ``step`` (from 0) of its warm-up."""
    ramp = defense.warmup_epochs * steps_per_epoch
    return 1.0 if step + 1 >= ramp else (step + 1) / ramp


def combined_label(strategy: str, defense: str) -> str:
    """``"vpt_deep"`` + ``"pgd_at(eps=0.01)"`` -> ``"vpt_deep + pgd_at(eps=0.01)"``; no defense adds nothing."""
    return strategy if defense == NONE else f"{strategy} + {defense}"


def defended_loss(defense: Defense, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  criterion: Callable, train_mode: Callable[[], None]) -> torch.Tensor:
    """One batch's loss under ``defense``: examples made in eval mode, loss computed in train mode.

    ``train_mode`` puts the model back the way its strategy trains it (Strategy.train_mode).
    """

    model.eval()
    with frozen(model), exact_arithmetic():  # the examples, like an attack's, in exact arithmetic
        adversarial = defense.perturb(model, images, labels).detach()
    check_perturbation(f"defense {defense.name}", defense.norm, adversarial, images, defense.eps)
    train_mode()
    return defense.loss(model, images, adversarial, labels, criterion)
