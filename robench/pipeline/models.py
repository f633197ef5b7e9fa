"""Building a run's backbone through its provider plugin, with its normalization moved inside.

Attacks must see pixels in [0, 1] (FIELD_NOTES, "Threat model"): a model that expects
normalized input would silently turn eps into eps/std. So every model robench trains, evaluates
or attacks is ``Normalized(model)`` (robench.backbone), which takes [0, 1] images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

from robench.backbone import DEFAULT_PROVIDER, MICRO, Backbone, BackboneSpec, Normalized
from robench.errors import RobenchError
from robench.pipeline.registry import load_registry
from robench.weights import check_readable

# Prefixes timm itself reads in a model name (``hf-hub:timm/vit_...``): not a provider's.
TIMM_SOURCES = ("hf-hub", "hf_hub", "local-dir")


def parse_backbone(text: str) -> tuple[str, str]:
    """``"open_clip:ViT-B-16"`` -> ``("open_clip", "ViT-B-16")``; a name without a provider is timm's."""
    prefix, sep, rest = text.partition(":")
    if not sep or prefix in TIMM_SOURCES:
        return DEFAULT_PROVIDER, text
    registry = load_registry()
    registry.get("backbone", prefix)  # an unknown provider: one line listing the valid ones
    if not rest:
        raise RobenchError(f"--backbone {text!r} names no model: write {prefix}:MODEL")
    return prefix, rest


def provider(spec: BackboneSpec) -> Backbone:
    return load_registry().get("backbone", spec.provider).factory()


def check_backbone(spec: BackboneSpec) -> None:
    """Fail early, with valid names, for an unknown model, a missing or unreadable weights file,
    a file of another model, or hub weights that cannot be had."""
    backbone = provider(spec)
    backbone.check(spec.name)
    if spec.weights is not None and not spec.weights.is_file():
        raise RobenchError(f"weights file {spec.weights} not found: pass --weights with a weights file of {spec.label}")
    if spec.weights is not None and backbone.state_dict_weights:
        check_readable(spec.weights)
    backbone.check_weights(spec.name, spec.weights, spec.pretrained)


def create_backbone(spec: BackboneSpec, num_classes: int) -> tuple[nn.Module, tuple, tuple]:
    """Build the model with a fresh ``num_classes`` head; return it with its mean and std."""
    check_backbone(spec)
    return provider(spec).create(spec.name, num_classes=num_classes, image_size=spec.image_size,
                                 weights=spec.weights, pretrained=spec.pretrained)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["MICRO", "BackboneSpec", "Normalized", "check_backbone", "create_backbone", "file_sha256", "parse_backbone"]
