"""AutoAttack's four stages, run so that a robust model costs what its survivors need.

torchattacks' AutoAttack (the reference, ``autoattack:early_exit=false``) spends, on every image a
robust model keeps, 100 APGD-CE iterations, 100 APGD-T iterations for each of the n - 1 other
classes, 100 FAB-T iterations for each of them, and 5,000 Square queries; and APGD runs all its
iterations on images fooled at the first. Here the same torchattacks components run, with two
changes:

- **Each image stops once fooled** (:class:`RowsUntilFooled`). APGD's iterates are per image
  (step size, momentum, checkpoints: nothing mixes rows), so an image's trajectory does not
  depend on the others in the batch. The wrapper computes the model only for the images not yet
  fooled, keeps each image's first fooling input, and answers for the others with logits that
  APGD reads as still correct (so it keeps, per image, that first fooling iterate as its best).
- **Targets ranked by MALT** (Melamed et al., NeurIPS 2024, "MALT Powers Up Adversarial
  Attacks"): APGD-T and FAB-T attack the ``targets`` classes nearest to the decision boundary in
  the model's linear approximation at the image, (z_t - z_y) / ||grad (z_t - z_y)||_1 (the L1 norm,
  dual of L-inf), instead of every other class in the order of the logits. MALT reports the
  same successes as AutoAttack at a fifth of its time; robench checks it per image against the
  reference (``python bench/autoattack_defended.py``; tests/test_autoattack_stages.py).

Each stage attacks only the images every earlier stage left correct, seeded as torchattacks
seeds it (once per stage).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from robench.attack import fools


class AllFooled(Exception):
    """Every image of the batch has been misclassified: the stage has nothing left to do."""


class RowsUntilFooled(nn.Module):
    """The model, for one stage on one batch of images: keeps each image's first input the model
    got wrong and, from then on, computes nothing for it, answering with logits that put the
    true class first (no gradient). Raises AllFooled once every image was fooled. Calls on a
    batch of another size (a component's own checks) pass through."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def start(self, labels: torch.Tensor) -> None:
        self.labels = labels
        self.fooled = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
        self.first_fooled: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) != len(self.labels):
            return self.model(x)
        active = (~self.fooled).nonzero().flatten()
        computed = self.model(x[active])
        classes = computed.shape[1]
        logits = F.one_hot(self.labels, classes).to(computed.dtype).index_put((active,), computed)
        wrong = fools(computed.detach(), self.labels[active])
        if self.first_fooled is None:
            self.first_fooled = x.detach().clone()
        newly = active[wrong]
        self.first_fooled[newly] = x.detach()[newly]
        self.fooled[newly] = True
        if self.fooled.all():
            raise AllFooled
        return logits


def run_stage(watched: RowsUntilFooled, attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which of ``x`` the stage ``attack(x, y)`` fooled; their examples are in ``watched.first_fooled``."""
    watched.start(y)
    try:
        attack(x, y)
    except AllFooled:
        pass
    return watched.fooled.clone()


class TargetedAPGD(torchattacks.APGDT):
    """torchattacks' APGD-T (targeted DLR loss) on one given target class per image, where its own
    takes the k-th largest clean logit: the single call that ranks the classes (the first of
    ``attack_single_run``) is answered with a one-hot of the given targets."""

    def attack_targets(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor):
        self.target_class, self._targets = 1, targets  # the largest "logit" of the one-hot: the target
        return self.attack_single_run(x, y)

    def get_logits(self, inputs, *args, **kwargs):
        targets, self._targets = getattr(self, "_targets", None), None
        if targets is not None:
            return F.one_hot(targets, self.n_target_classes + 1).float()
        return super().get_logits(inputs, *args, **kwargs)


def malt_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Per image, the k classes other than its label nearest to the boundary in the model's linear
    approximation at x, nearest first: MALT's ranking by (z_t - z_y) / ||grad_x (z_t - z_y)||_1."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        classes = logits.shape[1]
        own = logits.gather(1, y[:, None]).squeeze(1)
        scores = torch.full((len(y), classes), -torch.inf, device=x.device)
        for target in range(classes):
            difference = logits[:, target] - own
            (grad,) = torch.autograd.grad(difference.sum(), x, retain_graph=target < classes - 1)
            scores[:, target] = difference.detach() / grad.flatten(1).abs().sum(1).clamp_min(1e-12)
    scores[torch.arange(len(y)), y] = -torch.inf
    return scores.topk(k, dim=1).indices


def fast_autoattack(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, *, steps: int,
                    n_queries: int, seed: int, targets: int) -> torch.Tensor:
    """APGD-CE, APGD-T and FAB-T on the MALT-ranked ``targets`` classes, then Square: each stage on the
    images every earlier one left correct, each image stopping APGD's iterations once fooled."""
    adversarial = images.clone()
    with torch.no_grad():
        clean = model(images)
    classes = clean.shape[1]
    left = (~fools(clean, labels)).nonzero().flatten()  # the clean-wrong need no attack
    watched = RowsUntilFooled(model)

    def keep(rows: torch.Tensor, fooled: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        adversarial[rows[fooled]] = examples[fooled].to(adversarial.dtype)
        return rows[~fooled]

    def model_fooled(rows: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fools(model(examples), labels[rows])

    if len(left):  # APGD-CE
        apgd = torchattacks.APGD(watched, norm="Linf", eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed)
        torch.manual_seed(seed)
        left = keep(left, run_stage(watched, apgd.attack_single_run, images[left], labels[left]), watched.first_fooled)
    ranked = torch.zeros(len(labels), targets, dtype=torch.long, device=labels.device)
    if len(left):
        ranked[left] = malt_targets(model, images[left], labels[left], targets)
    apgd_t = TargetedAPGD(watched, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, n_classes=classes)
    torch.manual_seed(seed)
    for rank in range(targets):  # APGD-T, nearest target first
        if not len(left):
            break
        aimed = ranked[left, rank]
        fooled = run_stage(watched, lambda x, y, aimed=aimed: apgd_t.attack_targets(x, y, aimed), images[left], labels[left])
        left = keep(left, fooled, watched.first_fooled)
    for rank in range(targets):  # FAB-T
        if not len(left):
            break
        aimed = ranked[left, rank]
        fab = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, n_classes=classes, seed=seed)
        fab.set_mode_targeted_by_function(lambda x, y, aimed=aimed: aimed, quiet=True)
        examples = fab(images[left], labels[left])
        left = keep(left, model_fooled(left, examples), examples)
    if len(left):  # Square
        square = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=n_queries, n_restarts=1, seed=seed)
        examples = square(images[left], labels[left])
        keep(left, model_fooled(left, examples), examples)
    return adversarial
