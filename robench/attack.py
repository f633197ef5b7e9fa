"""What an attack is: a function from (model, images, labels, eps) to adversarial images.

Contract every attack plugin honours (robench relies on it for correct numbers):
- ``model`` is in eval mode, takes images in [0, 1] (normalization is inside it) and returns logits;
  its parameters do not require gradients.
- ``images`` are in [0, 1]; the result stays in [0, 1] and within ``eps`` of them in the attack's norm.
- eps is in [0, 1] pixel units (0.01 is about 2.55/255).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import ClassVar

import torch
from torch import nn

# How strong an attack family is expected to be; used to flag suspicious results: a stronger
# family that does worse than a weaker one at the same eps points at a weak or masked attack.
FAMILIES = ("single-step", "iterative", "ensemble")


class Attack:
    """An adversarial attack. Subclasses set ``name``, ``family`` and implement ``perturb``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    family: ClassVar[str] = "iterative"  # one of FAMILIES
    black_box: ClassVar[bool] = False  # query-based: beating white-box attacks means masked gradients
    norm: ClassVar[str] = "Linf"

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def sweep(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_values: Iterable[float]
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """Adversarial images for each eps. Attacks that can share work across eps override this."""
        for eps in eps_values:
            yield eps, images if eps == 0 else self.perturb(model, images, labels, eps)


def check_perturbation(who: str, norm: str, adversarial: torch.Tensor, clean: torch.Tensor, eps: float) -> None:
    """Refuse images that break the threat model ``who`` (an attack or a defense) declares.

    Shared by evaluation, which would otherwise publish numbers from a broken attack, and by
    adversarial training, which would otherwise train on examples outside the eps-ball.
    """
    if adversarial.shape != clean.shape:
        raise ValueError(f"{who} returned shape {tuple(adversarial.shape)} for input {tuple(clean.shape)}")
    if adversarial.min() < 0 or adversarial.max() > 1:
        raise ValueError(f"{who} left the [0, 1] pixel range")
    if norm == "Linf" and (adversarial - clean).abs().max() > eps + 1e-6:
        raise ValueError(f"{who} exceeded eps={eps} in L-inf")
