"""The pretrained ViT, created by timm, with its normalization moved inside the model.

Attacks must see pixels in [0, 1] (FIELD_NOTES, "Threat model"): a model that expects
normalized input would silently turn eps into eps/std. So every model robench trains, evaluates
or attacks is ``Normalized(vit)``, which takes [0, 1] images.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from robench.errors import RobenchError

MICRO = "robench_vit_micro"
# timm reads a module's `default_cfgs` when registering a model: this gives the micro ViT its
# input size and a mean/std, like any timm model.
default_cfgs = generate_default_cfgs({MICRO: dict(input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=7)})


@register_model
def robench_vit_micro(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A ViT of 0.2M parameters for the offline synthetic benchmark and for tests (no hub weights,
    but a local file given with ``--weights`` loads like any timm model's)."""
    if pretrained and not (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        raise RobenchError(f"{MICRO} has no pretrained weights: it is for the synthetic dataset and tests")
    options = dict(img_size=32, patch_size=4, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0) | kwargs
    return build_model_with_cfg(VisionTransformer, MICRO, pretrained=pretrained, **options)


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


@dataclass(frozen=True)
class BackboneSpec:
    """Which ViT to build and from which weights; ``weights=None`` means timm's hub download."""

    name: str
    image_size: int
    weights: Path | None = None
    pretrained: bool = True

    def describe_weights(self) -> str:
        if self.weights is not None:
            return self.weights.name
        return "timm hub (pretrained)" if self.pretrained else "random init"


def check_backbone(spec: BackboneSpec) -> None:
    """Fail early, with valid names, for an unknown model or a missing weights file."""
    if not timm.is_model(spec.name):
        known = timm.list_models("vit_*") + timm.list_models("deit_*") + [MICRO]
        close = difflib.get_close_matches(spec.name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise RobenchError(f"unknown backbone {spec.name!r}: {hint}any timm ViT works, e.g. vit_base_patch16_224 (list: timm.list_models('vit_*'))")
    if spec.weights is not None and not spec.weights.is_file():
        raise RobenchError(f"weights file {spec.weights} not found: pass --weights with a timm .safetensors or .pth file of {spec.name}")


def create_backbone(spec: BackboneSpec, num_classes: int) -> tuple[nn.Module, tuple, tuple]:
    """Build the ViT with a fresh ``num_classes`` head; return it with its mean and std."""
    check_backbone(spec)
    kwargs = dict(num_classes=num_classes, img_size=spec.image_size)
    if spec.weights is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(spec.weights)))
    else:
        kwargs.update(pretrained=spec.pretrained and spec.name != MICRO)
    try:
        model = timm.create_model(spec.name, **kwargs)
    except RobenchError:
        raise
    except TypeError as exc:  # a timm model that is not a ViT: it takes no img_size
        raise RobenchError(
            f"backbone {spec.name} is not a Vision Transformer robench can build ({str(exc).splitlines()[0][:150]}): "
            f"use a timm ViT such as vit_base_patch16_224 or deit_tiny_patch16_224"
        ) from None
    except RuntimeError as exc:  # state-dict mismatch: the weights are another model's
        details = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise RobenchError(
            f"weights {spec.describe_weights()} do not fit backbone {spec.name}: {details[:300]}; "
            f"pass the weights of {spec.name} or the backbone they belong to"
        ) from None
    except (OSError, ValueError, SafetensorError) as exc:  # hub unreachable, unreadable file
        raise RobenchError(
            f"could not load weights {spec.describe_weights()} for {spec.name} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            f"pass a readable local weights file of {spec.name} with --weights"
        ) from None
    cfg = model.pretrained_cfg
    return model, tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
