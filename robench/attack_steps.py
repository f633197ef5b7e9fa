"""The steps attacks and defenses share: the losses an attack ascends, its input gradient, the
projection onto the eps-ball, and PGD's iteration. Public through robench.attack, so that an
attack plugin and a defense plugin (PGD and PGD-AT) run the same code without importing each
other's modules."""

from __future__ import annotations

import torch
from torch import nn

# The threat models robench checks. eps means something else in each, so attacks of different
# norms are never compared, combined or drawn on one axis.
NORMS = ("Linf", "L2")

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
    """grad_x of :func:`attack_loss` at ``images``: L-inf attacks step along its sign, L2 ones along
    it scaled to unit length per image."""
    images = images.clone().detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(attack_loss(model(images), labels, loss, targets), images)
    return grad


def project(images: torch.Tensor, clean: torch.Tensor, eps: float, norm: str = "Linf") -> torch.Tensor:
    """Bring ``images`` into the ``norm`` ball of radius ``eps`` around ``clean`` and into [0, 1].

    L-inf is computed as torchattacks does (clip the difference, add it back), so that robench's
    PGD and torchattacks' give bitwise equal images. L2 scales each image's difference down to
    length eps where it is longer; clipping into [0, 1] afterwards only shortens it.
    """
    delta = images - clean
    if norm == "Linf":
        delta = torch.clamp(delta, min=-eps, max=eps)
    elif norm == "L2":
        length = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))
        delta = delta * torch.clamp(eps / length, max=1.0)
    else:
        raise ValueError(f"unknown norm {norm!r}: robench checks {', '.join(NORMS)}")
    return torch.clamp(clean + delta, min=0, max=1).detach()


def pgd_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float, steps: int,
              loss: str, random_start: bool = True, targets: torch.Tensor | None = None) -> torch.Tensor:
    """One L-inf PGD run (Madry et al. 2018) from one random start; the last iterate. With
    ``loss="ce"`` the same computation, in the same order and with the same random draws, as
    ``torchattacks.PGD`` (bitwise equal, tests/test_exact_attacks.py)."""
    adv = images.clone().detach()
    if random_start:
        adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-eps, eps), min=0, max=1).detach()
    for _ in range(steps):
        adv = project(adv + alpha * gradient(model, adv, labels, loss, targets).sign(), images, eps)
    return adv


def pgd_first_fooled(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, alpha: float,
                     steps: int, loss: str, random_start: bool = True,
                     targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD that keeps, per image, the first iterate that fools the model and stops computing for it.

    Returns the adversarial images and which of them an iterate was seen to fool (the last iterate
    of the others is returned unchecked: the caller checks every example anyway). Fooled means
    another class than the label, or the target class for a targeted attack. The random start and
    the steps are those of :func:`pgd_steps`, so an image is never worse off than there: where
    that keeps a last iterate the model gets right again, this keeps the earlier one that fooled.

    Each iterate is checked by a forward pass before its gradient is taken, except where few
    images were fooled at the step before: then the gradient's own forward pass is the check and
    the backward pass of an image it finds fooled is wasted, which costs less than a separate
    check of every image when fewer than a third get fooled per step. The random start is
    checked that way (it rarely fools), the first gradient step's iterate by a check of its own.
    bench/pgd_cost.py measures the cost against an oracle that knows when each image is first fooled.
    """
    adv = images.clone().detach()
    if random_start:
        adv = torch.clamp(adv + torch.empty_like(adv).uniform_(-eps, eps), min=0, max=1).detach()
    fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    active = torch.arange(len(images), device=images.device)
    check_first = False  # the first iterate: a random start rarely fools
    for step in range(steps):
        before = len(active)
        if check_first:
            with torch.no_grad():
                hit = fools(model(adv[active]), labels[active], None if targets is None else targets[active])
            fooled[active[hit]] = True
            active = active[~hit]
            if not len(active):
                break
        wanted = None if targets is None else targets[active]
        x = adv[active].requires_grad_(True)
        logits = model(x)
        keep = torch.ones_like(active, dtype=torch.bool) if check_first else ~fools(logits.detach(), labels[active], wanted)
        fooled[active[~keep]] = True
        if not keep.any():
            break
        (grad,) = torch.autograd.grad(attack_loss(logits[keep], labels[active][keep], loss,
                                                  None if wanted is None else wanted[keep]), x)
        step_on = active[keep]
        adv[step_on] = project(adv[step_on] + alpha * grad[keep].sign(), images[step_on], eps)
        # After the first gradient step (where undefended models fall), check first while more than
        # a third of the images still running were fooled at the step before.
        check_first = step == 0 or 3 * (before - len(step_on)) > before
        active = step_on
    return adv.detach(), fooled


def fools(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """Per image, whether the model's answer is an attack's success: another class than the label,
    or the target class for a targeted attack."""
    predicted = logits.argmax(1)
    return predicted != labels if targets is None else predicted == targets
