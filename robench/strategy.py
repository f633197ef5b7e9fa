"""What a fine-tuning strategy is: which parameters of a pretrained backbone train, and the recipe.

A strategy plugin subclasses :class:`Strategy`, takes its options as keyword arguments of
``__init__`` and registers the class through the ``register_strategies`` hook.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from robench.errors import PluginError


@dataclass(frozen=True)
class Recipe:
    """How to train. Each strategy declares its defaults; users override any field per
    strategy (``full:lr=1e-4``) or globally (``--lr 1e-4``)."""

    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    epochs: int = 10
    warmup_epochs: int = 1
    schedule: str = "cosine"  # cosine | constant, after the linear warm-up
    batch_size: int = 64
    augment: bool = True  # random label-preserving transforms: the dataset's symmetries (robench.dataset)
    class_weighting: str = "balanced"  # balanced | none: cross-entropy weights, against collapse to `nv`
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, not {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, not {self.schedule!r}")
        if self.class_weighting not in ("balanced", "none"):
            raise ValueError(f"class_weighting must be balanced or none, not {self.class_weighting!r}")
        if not 0 < self.lr < math.inf or self.epochs < 1 or self.batch_size < 1 or self.warmup_epochs < 0:  # nan too
            raise ValueError("lr must be a finite number > 0, epochs and batch_size >= 1, warmup_epochs >= 0")
        if not (0 <= self.weight_decay < math.inf and 0 <= self.momentum < math.inf and 0 <= self.label_smoothing < 1):
            raise ValueError("weight_decay and momentum must be finite numbers >= 0, label_smoothing in [0, 1)")

    def override(self, **changes) -> Recipe:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


RECIPE_FIELDS = {f.name: typing.get_type_hints(Recipe)[f.name] for f in dataclasses.fields(Recipe)}
TUNABLE = tuple(name for name, kind in RECIPE_FIELDS.items() if kind is float)  # what `--tune` may search


@dataclasses.dataclass(frozen=True)
class SearchRange:
    """A range ``robench run --tune`` searches for one recipe field: [low, high], on a log scale by
    default. ``per_256``: the range is for a batch of 256 images and scales linearly with the
    recipe's batch size (the VPT paper's rule for its SGD learning rates)."""

    low: float
    high: float
    log: bool = True
    per_256: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"the range {self.low:g}:{self.high:g} is empty: LOW must be below HIGH")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs LOW > 0, got {self.low:g}")

    def for_batch(self, batch_size: int) -> SearchRange:
        """The range for a recipe of ``batch_size`` images per step."""
        scale = batch_size / 256 if self.per_256 else 1.0
        return SearchRange(self.low * scale, self.high * scale, self.log)


class Strategy:
    """A way to fine-tune a pretrained ViT. Subclasses set ``name``, ``recipe`` and ``adapt``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    recipe: ClassVar[Recipe] = Recipe()
    # What `--tune` searches, per recipe field (of TUNABLE): declared next to the recipe, from the
    # method's paper where it gives one. Empty: the strategy can be tuned only with ranges given.
    search_space: ClassVar[dict[str, SearchRange]] = {}
    # False: ``adapt`` returns a model trained elsewhere (the ``given`` strategy of robench.benchmark
    # and ``robench eval``): robench trains nothing, keeps no checkpoint and only evaluates and attacks it.
    trains: ClassVar[bool] = True

    def adapt(self, model: nn.Module) -> nn.Module:
        """Turn a backbone (with a fresh classification head) into the model to train.

        ``model`` honours the contract in robench.backbone (``get_classifier``, ``forward_features``,
        ``forward_head``); raise ``robench.errors.PluginError`` in one line for one this strategy
        cannot serve (docs/backbones.md). Set ``requires_grad`` on exactly the parameters that
        train; return the model (the same object or a wrapper). Normalization is added around it by robench, so it sees
        normalized images exactly as the pretrained backbone expects.
        """
        raise NotImplementedError

    def train_mode(self, model: nn.Module) -> None:
        """Put the adapted model in training mode (a frozen backbone may stay in eval mode)."""
        model.train()

    def optimizer_options(self) -> dict:
        """Extra keyword arguments for timm's ``create_optimizer_v2``, e.g. ``layer_decay``.

        The optimizer is built on the adapted model itself (not the ``Normalized`` wrapper), so
        timm finds its ``group_matcher`` and ``no_weight_decay``.
        """
        return {}

    def for_evaluation(self, model: nn.Module) -> nn.Module:
        """The model a user would deploy, evaluated and attacked (e.g. LoRA adapters merged)."""
        return model


# What every built-in strategy asks of a backbone: one classification head, ``get_classifier()``.
# robench trains, caches features for and checkpoints that one module (robench.pipeline.train). A distilled
# DeiT (``deit_*_distilled_*``) has two, whose logits it averages, and ``get_classifier()`` returns
# both as a tuple; strategies refuse it with these helpers before any training, in one line.


def architecture(model: nn.Module) -> str:
    """The timm name of ``model`` (``deit_tiny_distilled_patch16_224``), else its class name."""
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def single_head(model: nn.Module, strategy: str, required: bool = True) -> nn.Module | None:
    """``model.get_classifier()``, or a one-line PluginError when it is not one module (with
    ``required=False``, None for a model without ``get_classifier``: full fine-tuning needs none)."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module) or (head is None and not required):
        return head
    arch = architecture(model)
    if isinstance(head, tuple):
        raise PluginError(
            f"{strategy} cannot train {arch}: its get_classifier() returns {len(head)} heads (a distilled DeiT's CLS and "
            f"distillation heads) and robench trains one; use the model without distillation, e.g. deit_tiny_patch16_224"
        )
    raise PluginError(f"{strategy} needs a timm model with a classification head (get_classifier()), not {arch} ({type(model).__name__})")
