"""timm's models (the default provider): ``--backbone vit_base_patch16_224`` or ``timm:NAME``.

ViTs get ``img_size`` so that their position embeddings are interpolated to ``--image-size``;
CNNs (resnet50, convnext_tiny: the baseline researchers compare with) take any size as they are.
Also registers ``robench_vit_micro``, a 0.2M-parameter ViT for the offline synthetic benchmark.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import timm
from safetensors import SafetensorError
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import robench
from robench.backbone import MICRO, Backbone
from robench.errors import RobenchError, did_you_mean
from robench.weights import hub_reachable, no_download, offline_unless_reachable
from robench_plugins.backbones.timm.weights import check_named_model, fitting_models, load_errors

# timm reads a module's `default_cfgs` when registering a model: this gives the micro ViT its
# input size and a mean/std, like any timm model.
default_cfgs = generate_default_cfgs({MICRO: {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "num_classes": 7}})


@register_model
def robench_vit_micro(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A ViT of 0.2M parameters for the offline synthetic benchmark and for tests (no hub weights,
    but a local file given with ``--weights`` loads like any timm model's)."""
    if pretrained and not (kwargs.get("pretrained_cfg_overlay") or {}).get("file"):
        raise RobenchError(f"{MICRO} has no pretrained weights: it is for the synthetic dataset and tests")
    options = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0} | kwargs
    return build_model_with_cfg(VisionTransformer, MICRO, pretrained=pretrained, **options)


class Timm(Backbone):
    """timm's models (default): any timm ViT, DeiT, CLIP, DINOv2, ...; CNNs for full and linear_probe."""

    name = "timm"

    def check(self, model: str) -> None:
        if not timm.is_model(model):
            hint = did_you_mean(model, timm.list_models())
            raise RobenchError(f"unknown backbone {model!r}: {hint}any timm model works, e.g. vit_base_patch16_224 (list: timm.list_models('vit_*'))")

    def check_weights(self, model: str, weights: Path | None, pretrained: bool) -> None:
        if weights is not None:
            check_named_model(model, weights)
        elif pretrained and model != MICRO:
            offline_unless_reachable()  # then a download that is not cached fails at once, not after a minute of retries

    def default_image_size(self, model: str) -> int:
        try:
            return int(timm.models.get_pretrained_cfg(model).input_size[-1])
        except (AttributeError, RuntimeError, TypeError):
            return 224

    def create(self, model: str, *, num_classes: int, image_size: int, weights: Path | None,
               pretrained: bool) -> tuple[nn.Module, tuple, tuple]:
        kwargs = {"num_classes": num_classes, "img_size": image_size}
        if weights is not None:
            # A local .safetensors/.pth is a state dict: newer timm sends a file of a model whose hub
            # weights are JAX .npz (custom_load, the AugReg ViTs) to the .npz reader and fails.
            custom = {} if Path(weights).suffix == ".npz" else {"custom_load": False}
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(weights), **custom))
        else:
            kwargs.update(pretrained=pretrained and model != MICRO)
        described = weights.name if weights is not None else "timm hub"
        try:
            try:
                built = timm.create_model(model, **kwargs)
            except TypeError as exc:  # a CNN: it takes any input size and no img_size
                if "img_size" not in str(exc):
                    raise
                built = timm.create_model(model, **{k: v for k, v in kwargs.items() if k != "img_size"})
        except RobenchError:
            raise
        except TypeError as exc:
            raise RobenchError(f"timm cannot build {model} ({_first_line(exc)}): pick another backbone") from None
        except RuntimeError as exc:  # state-dict mismatch: the weights are another model's
            if weights is None or not (mismatch := load_errors(str(exc))):
                raise RobenchError(f"could not load weights {described} for {model} ({_first_line(exc)})") from None
            fits = fitting_models(weights, model) or f"pass the weights of {model} or the backbone they belong to"
            raise RobenchError(f"weights {described} do not fit backbone {model}: {mismatch}; {fits}") from None
        except (OSError, ValueError, SafetensorError) as exc:  # hub unreachable, unreadable file
            if weights is None and not hub_reachable():
                raise no_download(model) from None
            raise RobenchError(
                f"could not load weights {described} for {model} ({type(exc).__name__}: {_first_line(exc)}); "
                f"pass a readable local weights file of {model} with --weights"
            ) from None
        cfg = built.pretrained_cfg
        return built, tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))


def _first_line(exc: Exception) -> str:
    """An error's first line, shortened at a word boundary, never mid-word."""
    return textwrap.shorten((str(exc).splitlines() or [""])[0], 200, placeholder=" ...")


@robench.hookimpl
def register_backbones(register):
    register(Timm)
