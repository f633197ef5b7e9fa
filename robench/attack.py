"""What an attack is: a function from (model, images, labels, eps) to adversarial images.

Contract every attack plugin honours (robench relies on it for correct numbers):
- ``model`` is in eval mode, takes images in [0, 1] (normalization is inside it) and returns logits;
  its parameters do not require gradients.
- ``images`` are in [0, 1]; the result stays in [0, 1] and within ``eps`` of them in the attack's norm.
- eps is in [0, 1] pixel units (0.01 is about 2.55/255).
- It runs in exact arithmetic: robench calls it inside :func:`exact_arithmetic`, whatever
  speeds training up (flushing subnormal floats, bf16 autocast) is off there.

The helpers below (the losses, ``gradient``, ``project``) are public so that attack and defense
plugins share them instead of importing each other's modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
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
    family: ClassVar[str] = "iterative"  # one of FAMILIES; "minimal" and "targeted" attacks are outside them
    black_box: ClassVar[bool] = False  # query-based: beating white-box attacks means masked gradients
    norm: ClassVar[str] = "Linf"

    def perturb(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
        raise NotImplementedError

    def for_dataset(self, classes: Sequence[str], malignant: Sequence[str]) -> None:
        """Called once before any model is attacked, with the dataset's class names (in label order)
        and those it declares malignant: an attack that takes class names (``target=nv``) resolves
        them here, and raises ValueError, shown to the user in one line, for a name it lacks."""

    def sweep(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_values: Iterable[float]
    ) -> Iterator[tuple[float, torch.Tensor]]:
        """Adversarial images for each eps. Attacks that can share work across eps override this."""
        for eps in eps_values:
            yield eps, images if eps == 0 else self.perturb(model, images, labels, eps)


class MinimalAttack(Attack):
    """An attack that finds, per image, the smallest eps at which the prediction flips, up to ``eps_max``.

    One run gives the robust accuracy at every eps (the share of images whose eps* exceeds it),
    so the runner records each image's eps* (``min_eps``) beside its prediction, and the
    leaderboard draws the whole curve. Subclasses set ``eps_max`` and implement ``minimize``.
    """

    family = "minimal"  # outside FAMILIES: compared with fixed-eps attacks by its own flag
    eps_max: float

    def minimize(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial images, eps*): eps* is the L-inf norm of each image's adversarial example,
        ``inf`` where none was found up to ``eps_max`` (that image's entry is then ignored)."""
        raise NotImplementedError

    def perturb(self, model, images, labels, eps):
        return next(iter(self.sweep(model, images, labels, [eps])))[1]

    def sweep(self, model, images, labels, eps_values):
        adversarial, star = self.minimize(model, images, labels)
        for eps in eps_values:
            yield eps, at_eps(images, adversarial, star, eps)


def at_eps(images: torch.Tensor, adversarial: torch.Tensor, star: torch.Tensor, eps: float) -> torch.Tensor:
    """What a minimal attack gives at one eps: the adversarial example where eps* <= eps, else the image."""
    return torch.where((star <= eps).view(-1, *[1] * (images.dim() - 1)), adversarial, images)


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


@contextmanager
def frozen(model: nn.Module):
    """No parameter requires gradients inside: an attack that calls ``backward()`` (torchattacks'
    FAB does) cannot accumulate gradients into the model or make it slower."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


# ---------------------------------------------------------------- exact arithmetic


def flushing_subnormals() -> bool:
    """Whether torch flushes subnormal floats to zero now (torch has no getter for the flag)."""
    return torch.tensor([1e-40]).mul(1).item() == 0


@contextmanager
def exact_arithmetic():
    """Compute attacks the way an independent evaluator would: subnormal floats kept, no autocast.

    robench flushes subnormal floats to zero while a model trains (a 3.2x CPU speed-up of
    VPT-shallow, ``bench/subnormal_flush.py``). Inside an attack that flush masks the gradient:
    a saturated cross-entropy leaves input-gradient components below 1.2e-38, the flush zeroes
    them, and an attack stepping along their sign stops moving those pixels. On a real
    VPT-shallow model it left 1 to 4 more of 120 images correct under PGD-10 on cross-entropy and
    4 to 5 more under FGSM (``python bench/attack_audit.py``, docs/performance.md). Autocast
    is switched off too, so that only an explicit ``--attack-precision bf16`` (which re-enters
    autocast inside) changes an attack's arithmetic.
    """
    flushed = flushing_subnormals()
    torch.set_flush_denormal(False)
    try:
        with ExitStack() as stack:
            for device in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                stack.enter_context(torch.autocast(device, enabled=False))
            yield
    finally:
        torch.set_flush_denormal(flushed)


# ---------------------------------------------------------------- losses an attack maximises

LOSSES = ("ce", "margin", "dlr")


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str, targets: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar an attack ascends: ``ce``, ``margin`` or ``dlr``; towards ``targets`` if given.

    - ``ce``: mean cross-entropy, as torchattacks, ART and foolbox define FGSM and PGD. It
      saturates: once the model is confident, softmax leaves gradients of 1e-30 and below, whose
      sign is noise or (flushed) zero (Carlini et al. 2019, arXiv 1902.06705).
    - ``margin``: the Carlini-Wagner logit margin, max_{i != y} z_i - z_y, summed over the batch.
      Logit differences do not saturate; it is positive exactly when the image is fooled.
    - ``dlr``: Croce & Hein's (ICML 2020) difference of logits ratio,
      -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), the margin made invariant to the logits'
      scale; it needs at least 3 classes.

    Targeted (``targets``, one class per image): ``ce`` is minus the cross-entropy to the target,
    ``margin`` is z_t - max_{i != t} z_i (Carlini & Wagner's targeted loss), positive exactly when
    the model answers the target; ``dlr`` has no targeted form here.
    """
    check_loss(loss)
    if targets is not None:
        if loss == "ce":
            return -nn.functional.cross_entropy(logits, targets)
        if loss == "dlr":
            raise ValueError("a targeted attack takes loss=ce or loss=margin, not dlr")
        return -margins(logits, targets).sum()
    if loss == "ce":
        return nn.functional.cross_entropy(logits, labels)
    if loss == "margin":
        return margins(logits, labels).sum()
    if logits.shape[1] < 3:
        raise ValueError(f"loss dlr needs at least 3 classes, the model has {logits.shape[1]}: use loss=margin")
    top = logits.sort(1, descending=True).values
    return (margins(logits, labels) / (top[:, 0] - top[:, 2] + 1e-12)).sum()


def margins(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Per image, max_{i != c} z_i - z_c for its class c: positive exactly when the model answers
    another class than c (the margin loss, and a minimal attack's distance to the boundary)."""
    own = logits.gather(1, classes[:, None]).squeeze(1)
    other = logits.scatter(1, classes[:, None], float("-inf")).amax(1)
    return other - own


def check_loss(loss: str) -> str:
    """``loss`` if it is a known one, else a ValueError naming the choices (for plugin options)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


def gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loss: str = "ce",
             targets: torch.Tensor | None = None) -> torch.Tensor:
    """grad_x of :func:`attack_loss` at ``images``: the direction every L-inf attack here steps along."""
    images = images.clone().detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(attack_loss(model(images), labels, loss, targets), images)
    return grad


def project(images: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip ``images`` into the L-inf ball of radius ``eps`` around ``clean`` and into [0, 1].

    Computed as torchattacks does (clip the difference, add it back), so that robench's PGD and
    torchattacks' give bitwise equal images.
    """
    delta = torch.clamp(images - clean, min=-eps, max=eps)
    return torch.clamp(clean + delta, min=0, max=1).detach()
