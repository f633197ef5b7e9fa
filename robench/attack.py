"""What an attack is: a function from (model, images, labels, eps) to adversarial images.

Contract every attack plugin honours (robench relies on it for correct numbers):
- It declares its ``family`` and ``norm`` (no defaults: :func:`check_attack_class` refuses a class
  without them, since a guessed one would compare it with the wrong attacks and check it in the
  wrong ball).
- ``model`` is in eval mode, takes images in [0, 1] (normalization is inside it) and returns logits;
  its parameters do not require gradients.
- ``images`` are in [0, 1]; the result stays in [0, 1] and, per image, within ``eps`` of them in
  the attack's norm.
- eps is in [0, 1] pixel units (0.01 is about 2.55/255); an L2 eps is the Euclidean length of the
  whole image's perturbation in those units.
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

from robench.attack_steps import (  # noqa: F401  (public here: what attack and defense plugins share)
    LOSSES,
    NORMS,
    attack_loss,
    check_loss,
    fools,
    gradient,
    margins,
    pgd_first_fooled,
    pgd_steps,
    project,
)
from robench.errors import PluginError

# The attack label of a model's clean row, in results and on pages: the one definition of it.
CLEAN = "none"
# How strong an attack family is expected to be; used to flag suspicious results: a stronger
# family that does worse than a weaker one at the same eps points at a weak or masked attack.
FAMILIES = ("single-step", "iterative", "ensemble")
TARGETED = "targeted"  # aimed at chosen classes: may keep images an untargeted attack fooled
MINIMAL = "minimal"  # a MinimalAttack's: searches each image's smallest eps, compared by its own flag
ESCALATION = "escalation"  # the family of robench's own escalation rows (robench.pipeline.escalation), never a plugin's
TRANSFER = "transfer"  # crafted on a surrogate model, evaluated on the model: a TransferAttack's, black box
PRETRAINED = "pretrained"  # a TransferAttack's source: the public backbone with a linear head (the grey-box threat)
LEGACY_NORM = "Linf"  # the norm of rows written before robench recorded one: the only one it had


class Attack:
    """An adversarial attack. Subclasses set ``name``, ``family`` and ``norm`` and implement ``perturb``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    family: ClassVar[str]  # one of FAMILIES, or TARGETED; no default (see check_attack_class)
    black_box: ClassVar[bool] = False  # query-based: beating white-box attacks means masked gradients
    norm: ClassVar[str]  # one of NORMS: the ball eps is a radius of; no default

    def __new__(cls, *args, **kwargs):
        # Refused when made, whoever makes it (the runner's plan, a notebook, a test), before any
        # model trains; the registry checks the class again when a plugin registers it.
        check_attack_class(cls)
        return super().__new__(cls)

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

    family = MINIMAL  # fixed by this contract, not a default: the runner treats the class by it
    eps_max: float

    def minimize(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(adversarial images, eps*): eps* is the size of each image's adversarial example in the
        attack's ``norm``, ``inf`` where none was found up to ``eps_max`` (that entry is then ignored)."""
        raise NotImplementedError

    def perturb(self, model, images, labels, eps):
        return next(iter(self.sweep(model, images, labels, [eps])))[1]

    def sweep(self, model, images, labels, eps_values):
        adversarial, star = self.minimize(model, images, labels)
        for eps in eps_values:
            yield eps, at_eps(images, adversarial, star, eps)


class TransferAttack(Attack):
    """An attack crafted on a surrogate, never on the model it is evaluated on (the grey-box threat of
    parameter-efficient fine-tuning: its backbone is public).

    ``source`` names the surrogate: ``pretrained`` (the public backbone with a linear head trained on
    the training split) or the label of another strategy of the run. robench builds the surrogate,
    calls :meth:`craft` once per seed on every attacked image, and evaluates the same examples on every
    model of the run (robench.pipeline.transfer): no target's weights reach the attack.
    """

    family = TRANSFER  # fixed by this contract, as a MinimalAttack's
    black_box = True  # it never reads the target's gradients: beating white-box attacks is a flag
    source: str

    def craft(self, surrogate: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              eps_values: Iterable[float]) -> Iterator[tuple[float, torch.Tensor]]:
        """Adversarial images for each eps, crafted on ``surrogate`` (eval mode, [0, 1] in, logits out)."""
        raise NotImplementedError

    def perturb(self, model, images, labels, eps):
        raise TypeError(f"attack {self.name} is a transfer attack: robench crafts it on its surrogate "
                        f"({self.source}) with craft(), never on the attacked model")


def at_eps(images: torch.Tensor, adversarial: torch.Tensor, star: torch.Tensor, eps: float) -> torch.Tensor:
    """What a minimal attack gives at one eps: the adversarial example where eps* <= eps, else the image."""
    return torch.where((star <= eps).view(-1, *[1] * (images.dim() - 1)), adversarial, images)


def check_attack_class(cls: type) -> type:
    """``cls`` if it declares a valid ``family`` and ``norm``, else a PluginError in one line naming
    the attack and the valid values.

    Declared means set by the class or a parent of its own, not inherited from Attack: a default
    would silently make a forgotten family "iterative" and a forgotten norm "Linf", so an L2
    attack would be checked in the L-inf ball, flagged against L-inf attacks and combined with
    them in the worst case. A MinimalAttack's family is ``minimal`` by its contract.
    """
    own = [k for k in cls.__mro__ if k not in (Attack, MinimalAttack, TransferAttack, object)]
    minimal = issubclass(cls, MinimalAttack)
    transfer = issubclass(cls, TransferAttack)
    families = (MINIMAL,) if minimal else (TRANSFER,) if transfer else (*FAMILIES, TARGETED)
    problems = []
    for attribute, valid in (("family", families), ("norm", NORMS)):
        value = getattr(cls, attribute, None)
        if not ((minimal or transfer) and attribute == "family") and not any(attribute in vars(k) for k in own):
            problems.append(f"no {attribute}")
        elif value not in valid:
            problems.append(f"{attribute} {value!r}")
    if problems:
        name = getattr(cls, "name", None) or cls.__qualname__
        note = "" if minimal else " (a minimal attack subclasses MinimalAttack instead)"
        raise PluginError(f"attack {name!r} ({cls.__module__}.{cls.__qualname__}) declares {' and '.join(problems)}: "
                          f"set family to one of {', '.join(families)}{note} and norm to one of {', '.join(NORMS)} "
                          "in its class")
    return cls


def perturbation_size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Each image's perturbation size in ``norm``: the largest pixel change (Linf) or the Euclidean
    length of the whole change (L2, summed in float64 so that rounding does not decide a check)."""
    flat = delta.flatten(1)
    if norm == "Linf":
        return flat.abs().amax(1)
    if norm == "L2":
        return flat.double().norm(dim=1)
    raise ValueError(f"unknown norm {norm!r}: robench checks {', '.join(NORMS)}")


def slack(eps, norm: str):
    """How far past ``eps`` a perturbation may measure and still count as inside: float32 rounding of
    the projection (1e-6 in L-inf, as always; in L2 also 1e-5 of eps, for the rounding of the scale
    eps / ||delta|| that brings a long perturbation back onto the ball)."""
    return 1e-6 if norm == "Linf" else 1e-6 + 1e-5 * eps


def check_perturbation(who: str, norm: str, adversarial: torch.Tensor, clean: torch.Tensor, eps: float) -> None:
    """Refuse images that break the threat model ``who`` (an attack or a defense) declares: each
    image must lie within ``eps`` of its clean one in ``norm``.

    Shared by evaluation, which would otherwise publish numbers from a broken attack, and by
    adversarial training, which would otherwise train on examples outside the eps-ball.
    """
    if adversarial.shape != clean.shape:
        raise ValueError(f"{who} returned shape {tuple(adversarial.shape)} for input {tuple(clean.shape)}")
    if adversarial.min() < 0 or adversarial.max() > 1:
        raise ValueError(f"{who} left the [0, 1] pixel range")
    sizes = perturbation_size(adversarial - clean, norm)
    if len(sizes) and sizes.max() > eps + slack(eps, norm):
        raise ValueError(f"{who} exceeded eps={eps} in {norm} (an image at {sizes.max().item():.6g})")


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
