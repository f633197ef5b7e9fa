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
"""

from __future__ import annotations

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

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The images to train on, made from a batch of [0, 1] images (model in eval mode)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, clean: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
             criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The loss to minimise (model in train mode); ``criterion`` is the recipe's cross-entropy."""
        return criterion(model(adversarial), labels)


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
