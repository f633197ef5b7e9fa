"""Escalation: the images every configured attack left correct at an eps, attacked again, harder.

A worst case over 10-step attacks is kinder than a stronger attack: on a real ViT-Ti/16 run
(HAM10000, 112 px, 120 attacked images) PGD on the margin with 30 steps and 2 restarts fooled 4 of
the 7 images full fine-tuning kept in the worst case at 0.25/255. Survivors are few, so attacking
them again costs little, and it is what makes the worst case hold against a stronger attack.

At each eps, after every attack of the run, the images that survived all of them (in L-inf, the
norm the escalation attacks in) are attacked in rounds. Round r (1, 2, ...) runs, one after the
other on the images still standing, each keeping an image's first fooling iterate:

- PGD on the Carlini-Wagner margin, ``FIRST_STEPS * 2**(r-1)`` steps, from ``RESTARTS`` random starts;
- PGD on cross-entropy, as many steps, one random start;
- APGD on Croce and Hein's DLR loss (torchattacks; cross-entropy for fewer than 3 classes), as
  many iterations: a step size that adapts, where PGD's is fixed.

Steps are 2.5 eps / steps (Madry et al.'s rule). The rounds go on until one fools nothing or the cap
(``--escalation N``, default ``ROUNDS``) is reached. A targeted attack (``pgd:target=benign``) gets
the same treatment towards its own targets on the images it did not bring there (margin and
cross-entropy PGD; APGD has no such targeted form), which is what the malignant-to-benign rate
reads.

Each escalation is a row of its own (attack ``escalation``, or ``escalation[pgd:target=benign]``,
family ``escalation``) whose ``adv_pred`` is every attacked image's answer in the worst case of the
run's attacks and the escalation together: the escalation's example where it fooled a survivor,
otherwise the first attack's wrong answer, otherwise the clean one. So the worst case
(robench.report.worst_case) takes it in like any attack, and the row says how many survivors it was given
(``escalated``) and how many it fooled (``escalation_fooled``) in how many rounds.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from robench.attack import ESCALATION, TARGETED, check_perturbation, fools, pgd_first_fooled
from robench.core.metrics import robust_metrics
from robench.pipeline.train import to_pixels

ROUNDS = 3  # the default cap on rounds
MAX_ROUNDS = 8  # round 8 runs 6,400 steps per attack
FIRST_STEPS = 50
RESTARTS = 2  # random starts of the margin PGD per round
NORM = "Linf"


def label(rounds: int = ROUNDS, targeted: str | None = None) -> str:
    """The attack label of an escalation row: ``escalation``, or ``escalation[ATTACK]`` for the
    escalation of the targeted attack labelled ATTACK; another cap than the default is named,
    ``escalation(rounds=5)``, so that a run resumed with another cap computes its own rows."""
    name = ESCALATION if rounds == ROUNDS else f"{ESCALATION}(rounds={rounds})"
    return name if targeted is None else f"{name}[{targeted}]"


def labels_for(attacks, rounds: int) -> list[tuple[str, object | None]]:
    """The escalation rows a run's planned attacks call for: (label, the targeted attack it escalates
    or None for the untargeted one). Only L-inf attacks are escalated; a targeted attack only where its
    plugin says per image what it aims at (a ``targets(model, images, labels)`` method, as PGD's)."""
    linf = [attack for attack in attacks if attack.plugin.norm == NORM]
    found = [(label(rounds), None)] if linf else []
    return found + [(label(rounds, attack.label), attack) for attack in linf
                    if attack.plugin.family == TARGETED and callable(getattr(attack.plugin, "targets", None))]


def escalate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, rounds: int = ROUNDS,
             targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Attack ``images`` (the survivors) in rounds of growing budget; return the examples, which of
    them fool the model (another class, or the target), and the number of rounds run."""
    adv = images.clone()
    fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    run = 0
    for run in range(1, rounds + 1):
        before = int(fooled.sum())
        steps = FIRST_STEPS * 2 ** (run - 1)
        for attack in _round_attacks(targets is not None):
            left = (~fooled).nonzero().flatten()
            if not len(left):
                break
            wanted = None if targets is None else targets[left]
            x = attack(model, images[left], labels[left], eps, steps, wanted, run)
            check_perturbation(f"{ESCALATION} ({attack.__name__})", NORM, x, images[left], eps)
            with torch.no_grad():
                hit = fools(model(x), labels[left], wanted)
            adv[left[hit]], fooled[left[hit]] = x[hit], True
        if int(fooled.sum()) == before or bool(fooled.all()):
            break
    return adv, fooled, run


def _round_attacks(targeted: bool):
    return (_pgd_margin, _pgd_ce) if targeted else (_pgd_margin, _pgd_ce, _apgd)


def _pgd_margin(model, images, labels, eps, steps, targets, run):
    adv, fooled = images.clone(), torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for _ in range(RESTARTS):
        left = (~fooled).nonzero().flatten()
        if not len(left):
            break
        x, hit = pgd_first_fooled(model, images[left], labels[left], eps, 2.5 * eps / steps, steps, "margin",
                                  targets=None if targets is None else targets[left])
        adv[left], fooled[left] = x, hit
    return adv


def _pgd_ce(model, images, labels, eps, steps, targets, run):
    return pgd_first_fooled(model, images, labels, eps, 2.5 * eps / steps, steps, "ce", targets=targets)[0]


def _apgd(model, images, labels, eps, steps, targets, run):
    """Croce and Hein's APGD (torchattacks), on DLR where the model has at least 3 classes."""
    import torchattacks  # only where a survivor is escalated: pages read this module's names without it

    with torch.no_grad():
        n_classes = model(images[:1]).shape[1]
    attack = torchattacks.APGD(model, norm=NORM, eps=eps, steps=steps, n_restarts=1, seed=run,
                               loss="dlr" if n_classes >= 3 else "ce")
    return attack(images, labels).detach()


def escalation_metrics(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, clean_preds: torch.Tensor,
                       worst_preds: torch.Tensor, eps: float, rounds: int, device,
                       targets: torch.Tensor | None = None, batch_size: int = 64) -> dict:
    """The metrics and records of one escalation row at ``eps``.

    ``images`` are the attacked images as stored (uint8 or [0, 1]); ``worst_preds`` is each attacked image's answer after the attacks escalated (for the untargeted
    escalation, the first wrong answer of any of them; for a targeted one, its attack's); the
    survivors, the images it still gets right (targeted: not at its target), are escalated.
    """
    started = time.perf_counter()
    labels_cpu = labels.cpu()
    reached = worst_preds != labels_cpu if targets is None else worst_preds == targets.cpu()
    survivors = ((clean_preds == labels_cpu) & ~reached).nonzero().flatten()
    preds = worst_preds.clone()
    n_fooled, n_rounds = 0, 0
    for chunk in survivors.split(batch_size) if eps > 0 and len(survivors) else ():
        x, y = to_pixels(images[chunk].to(device)), labels[chunk].to(device)
        aim = None if targets is None else targets[chunk].to(device)
        adv, fooled, run = escalate(model, x, y, eps, rounds, aim)
        with torch.no_grad():
            answers = model(adv).argmax(1).cpu()
        preds[chunk[fooled.cpu()]] = answers[fooled.cpu()]
        n_fooled, n_rounds = n_fooled + int(fooled.sum()), max(n_rounds, run)
    n_correct = int((clean_preds == labels_cpu).sum())
    return robust_metrics(labels_cpu, preds == labels_cpu, n_correct) | {
        "adv_pred": preds.tolist(), "attack_seconds": time.perf_counter() - started,
        "escalated": len(survivors) if eps > 0 else 0, "escalation_fooled": n_fooled, "escalation_rounds": n_rounds}


def rows(wanted, sweeps: dict, attacks, images, labels, clean_preds, model, device, rounds: int,
         batch_size: int, reseed) -> list[tuple[str, float, dict | Exception]]:
    """(label, eps, metrics or the error) of each escalation cell in ``wanted`` ((label, targeted
    attack or None) pairs, each with the eps still to do), from ``sweeps``: attack label -> eps ->
    its metrics, of the attacks that ran. ``reseed()`` is called before each cell, so a cell's random
    starts do not depend on which others a resumed run still had to compute."""
    done = []
    linf = [attack.label for attack in attacks if attack.plugin.norm == NORM and attack.label in sweeps]
    for (name, source), missing in wanted:
        if source is not None and source.label not in sweeps:
            done += [(name, eps, RuntimeError(f"{source.label} failed, so there is nothing to escalate")) for eps in missing]
            continue
        if not linf:
            done += [(name, eps, RuntimeError("every L-inf attack failed, so there is nothing to escalate")) for eps in missing]
            continue
        targets = None if source is None else _targets(source.plugin, model, images, labels, device, batch_size)
        for eps in missing:
            reseed()
            if source is None:
                worst = clean_preds.clone()
                for attack in linf:
                    preds = torch.as_tensor(sweeps[attack][eps]["adv_pred"])
                    first_wrong = (worst == labels) & (preds != labels)
                    worst[first_wrong] = preds[first_wrong]
            else:
                worst = torch.as_tensor(sweeps[source.label][eps]["adv_pred"])
            try:
                done.append((name, eps, escalation_metrics(model, images, labels, clean_preds, worst, eps, rounds,
                                                           device, targets, batch_size)))
            except Exception as exc:  # noqa: BLE001  (a failed cell is recorded, the others go on)
                done.append((name, eps, exc))
    return done


@torch.no_grad()
def _targets(attack, model, images, labels, device, batch_size) -> torch.Tensor:
    """What a targeted attack aims each attacked image at, as its own ``targets`` says."""
    parts = [attack.targets(model, to_pixels(images[chunk].to(device)), labels[chunk].to(device)).cpu()
             for chunk in torch.arange(len(images)).split(batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
