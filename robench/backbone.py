"""What a backbone provider is, and what the models it builds must honour.

A provider plugin subclasses :class:`Backbone`, sets ``name`` to its prefix (``--backbone
open_clip:ViT-B-16``; ``timm`` is the default prefix, so ``--backbone vit_base_patch16_224``
means ``timm:vit_base_patch16_224``) and registers the class through ``register_backbones``.

**The model contract** (what strategies and robench rely on, ``Strategy.adapt`` gets such a model):

- ``model(x)`` takes images normalized with the provider's mean and std, N x 3 x S x S float,
  and returns N x num_classes logits from a freshly initialised head. robench wraps it in
  :class:`Normalized`, so attacks see [0, 1] pixels and eps keeps its meaning.
- ``model.get_classifier()`` is that head (an ``nn.Module``): the linear probe trains it alone,
  VPT and LoRA train it with their own parameters.
- ``model.forward_head(model.forward_features(x), pre_logits=True)`` is the head's input, and
  ``get_classifier()`` of it the logits: the linear probe trains on these features, computed
  once (robench.pipeline.train).
- Strategies may ask for more and refuse a model in one line without it: VPT needs timm's
  ``VisionTransformer`` or ``Eva``, LoRA Linear attention layers (docs/backbones.md has the tested matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

DEFAULT_PROVIDER = "timm"
# The timm provider's 0.2M-parameter ViT at 32x32, random or from a local file: what plugin tests
# (robench's and a third party's) build models from, with no download and no real data.
MICRO = "robench_vit_micro"


class Backbone:
    """Builds models by name. Subclasses set ``name`` (the prefix) and implement ``create``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    install: ClassVar[str | None] = None  # how to install what it needs, e.g. 'pip install "robench[open_clip]"'
    # False: --weights is not a state dict (the ``module`` provider's whole pickled model), so the
    # generic check that a weights loader reads it (robench.weights.check_readable) does not apply.
    state_dict_weights: ClassVar[bool] = True

    def check(self, model: str) -> None:
        """Raise ``RobenchError`` in one line (with close names) for a model it cannot build; cheap."""

    def check_weights(self, model: str, weights: Path | None, pretrained: bool) -> None:
        """Raise ``RobenchError`` in one line, before any data is decoded, for weights that cannot
        be this model's (a file whose name or metadata names another model) or cannot be had (no
        network and nothing cached); cheap: reads no tensors. ``weights`` is a readable file or None."""

    def default_image_size(self, model: str) -> int:
        """The input size the model was pretrained at: --image-size when none is given."""
        return 224

    def create(self, model: str, *, num_classes: int, image_size: int, weights: Path | None,
               pretrained: bool) -> tuple[nn.Module, tuple, tuple]:
        """The model with a fresh ``num_classes`` head, and the mean and std its inputs are normalized with.

        ``weights``: a local file to load instead of the provider's download; ``pretrained=False``
        with no weights: random initialisation (offline tests and demos).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class BackboneSpec:
    """Which model to build, by which provider, from which weights; ``weights=None``: the provider's download."""

    name: str
    image_size: int
    weights: Path | None = None
    pretrained: bool = True
    provider: str = DEFAULT_PROVIDER

    @property
    def label(self) -> str:
        """As written on the command line and in the leaderboard: timm models without their prefix."""
        return self.name if self.provider == DEFAULT_PROVIDER else f"{self.provider}:{self.name}"

    def describe_weights(self) -> str:
        if self.weights is not None:
            return self.weights.name
        return f"{self.provider} hub (pretrained)" if self.pretrained else "random init"


class Normalized(nn.Module):
    """Wraps a model so that it takes images in [0, 1] and normalizes them itself."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(images))
