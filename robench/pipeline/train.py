"""The training loop shared by every strategy: the strategy decides what trains, this decides how.

The epoch kept is the one with the best validation balanced accuracy. When only the head
trains and nothing is augmented, the frozen backbone's features are computed once and the head
is trained on them: the same maths as training through the backbone, at one backbone pass (none
at all for later seeds, which find the features on disk: robench.pipeline.features).
A defense (robench.defense) replaces each augmented batch by the examples it trains on; the
features then change at every step, so they are never cached.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from robench.backbone import Normalized
from robench.core.metrics import balanced_accuracy
from robench.core.progress import TRAINING, progress
from robench.dataset import SYMMETRIES
from robench.defense import Defense, defended_loss, warmup_fraction
from robench.errors import RobenchError
from robench.pipeline.compute import autocast
from robench.strategy import Recipe, Strategy


class TrainingError(RobenchError):
    """Training diverged or could not run."""


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int  # 1-based
    best_val_bacc: float
    epochs: int
    seconds: float
    used_cached_features: bool


def to_pixels(batch: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float images in [0, 1]."""
    return batch.float().div_(255)


def augment(images: torch.Tensor, generator: torch.Generator, symmetries: str = "dihedral") -> torch.Tensor:
    """Each of the dataset's label-preserving transforms (robench.dataset.SYMMETRIES), with probability 1/2.

    Dermatoscopic lesions have no canonical orientation, so HAM10000 uses all 8 symmetries of a square.
    """
    n = images.shape[0]
    for transform in SYMMETRIES[symmetries]:
        mask = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1).to(images.device)
        images = torch.where(mask, transform(images), images)
    return images


def class_weights(labels: torch.Tensor, num_classes: int, scheme: str) -> torch.Tensor | None:
    """Inverse-frequency cross-entropy weights (sklearn's "balanced"), or None."""
    if scheme == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


def lr_lambda(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to zero (or constant), per optimisation step."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


def head_only(adapted: nn.Module) -> bool:
    """True when the only parameters that train are those of the classification head."""
    if not hasattr(adapted, "get_classifier"):
        return False
    classifier = adapted.get_classifier()
    if not isinstance(classifier, nn.Module):  # a distilled DeiT's (head, head_dist)
        return False
    head = {id(p) for p in classifier.parameters()}
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    return bool(trainable) and all(id(p) in head for p in trainable)


@torch.no_grad()
def frozen_features(model: Normalized, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """The pre-logit features of a frozen timm ViT for every image (eval mode)."""
    vit = model.model
    vit.eval()
    chunks = []
    for start in progress(range(0, len(images), batch_size), desc="features", unit="batch"):
        batch = to_pixels(images[start : start + batch_size].to(device))
        chunks.append(vit.forward_head(vit.forward_features(model.normalize(batch)), pre_logits=True))
    return torch.cat(chunks)


def train(
    model: Normalized,
    strategy: Strategy,
    recipe: Recipe,
    train_set: tuple[torch.Tensor, torch.Tensor],
    val_set: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    seed: int,
    device: torch.device,
    use_cached_features: bool = True,
    label: str = "",
    precision: str = "fp32",
    defense: Defense | None = None,
    features: Callable[[Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]] | None = None,
    symmetries: str = "dihedral",
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` (whose inner model the strategy adapted) and keep the best epoch's weights.

    ``train_set`` and ``val_set`` are (uint8 images, labels). Batches are drawn from a generator
    seeded with ``seed``, so the same call gives the same model. With a ``defense``, every batch
    is trained on the examples it makes (see robench.defense.defended_loss). ``precision="bf16"``
    runs the forward passes and the loss under bf16 autocast on CUDA (robench.pipeline.compute.autocast);
    the weights and the optimizer stay fp32. A defense's examples are made in exact arithmetic,
    as an attack's are (robench.attack.exact_arithmetic): no autocast, no subnormal flush. ``features``, given
    a function computing the frozen features {"train", "val"}, returns them: from disk when they
    were computed before (robench.pipeline.features.stored); by default it computes them. ``symmetries``:
    the dataset's, which ``recipe.augment`` draws from (none: nothing is augmented). ``on_epoch(epoch,
    val_bacc)`` is told each epoch's validation balanced accuracy (``--tune``'s pruner reads it).
    """
    adapted = model.model
    started = time.perf_counter()
    (train_inputs, train_labels), (val_inputs, val_labels) = train_set, val_set
    train_labels, val_labels = train_labels.to(device), val_labels.to(device)
    augments = recipe.augment and bool(SYMMETRIES[symmetries])
    cached = use_cached_features and defense is None and not augments and head_only(adapted)
    if cached:
        trained = optimized = adapted.get_classifier()

        def compute():
            with autocast(device, precision):
                return {"train": frozen_features(model, train_inputs, recipe.batch_size, device),
                        "val": frozen_features(model, val_inputs, recipe.batch_size, device)}

        found = (features or (lambda compute: compute()))(compute)
        train_inputs, val_inputs = found["train"].to(device), found["val"].to(device)

        def forward(x, generator=None):
            return trained(x)

        def set_train_mode():
            trained.train()
    else:
        trained, optimized = model, adapted  # the timm model itself, whose group_matcher timm's optimizer reads

        def pixels(x, generator=None):
            x = to_pixels(x.to(device))
            return augment(x, generator, symmetries) if generator is not None and augments else x

        def forward(x, generator=None):
            return model(pixels(x, generator))

        def set_train_mode():
            strategy.train_mode(adapted)

    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train_labels) / recipe.batch_size)
    optimizer = create_optimizer_v2(
        optimized, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
        **({"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}), **strategy.optimizer_options(),
    )
    for group in optimizer.param_groups:  # timm leaves layer decay's per-group scale to its own schedulers
        group["lr"] *= group.get("lr_scale", 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe, steps_per_epoch))
    weights = class_weights(train_labels.cpu(), num_classes, recipe.class_weighting)
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device), label_smoothing=recipe.label_smoothing)
    best_bacc, best_epoch, best_state, step = -1.0, 0, None, 0
    for epoch in progress(range(1, recipe.epochs + 1), desc=f"train {label}", unit="epoch", phase=TRAINING):
        set_train_mode()
        for batch in torch.randperm(len(train_labels), generator=generator).split(recipe.batch_size):
            with autocast(device, precision):
                if defense is None:
                    loss = loss_fn(forward(train_inputs[batch], generator), train_labels[batch])
                else:
                    ramped = defense.at_fraction(warmup_fraction(defense, step, steps_per_epoch))
                    loss = defended_loss(ramped, model, pixels(train_inputs[batch], generator), train_labels[batch],
                                         loss_fn, set_train_mode)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss became {loss.item()} in epoch {epoch}: lower the learning rate (:lr=...) or use --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
        trained.eval()
        with torch.no_grad(), autocast(device, precision):
            preds = torch.cat([forward(chunk).argmax(1) for chunk in val_inputs.split(recipe.batch_size)])
        val_bacc = balanced_accuracy(val_labels, preds == val_labels)
        if val_bacc > best_bacc:
            best_bacc, best_epoch, best_state = val_bacc, epoch, _trainable_state(trained)
        if on_epoch is not None:
            on_epoch(epoch, val_bacc)
    trained.load_state_dict(best_state, strict=False)
    return TrainResult(best_epoch, best_bacc, recipe.epochs, time.perf_counter() - started, cached)


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}
