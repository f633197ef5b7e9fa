"""open_clip's image towers (``pip install "robench[open_clip]"``): ``--backbone open_clip:MODEL``.

CLIP-style foundation models, medical ones among them: BiomedCLIP is
``open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``. Only the image
tower is kept; a fresh linear head reads its image embedding (the one CLIP's own linear-probe
evaluations use). Pretrained weights: ``MODEL@TAG`` for one of open_clip's tags
(``open_clip:ViT-B-16@openai``), an ``hf-hub:`` model, or a local checkpoint with ``--weights``.
The mean and std are those open_clip records for the weights. ``full`` and ``linear_probe``
serve every tower; VPT needs timm's ViT and refuses these (docs/backbones.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import robench
from robench.backbone import Backbone
from robench.errors import RobenchError, did_you_mean, import_optional
from robench.weights import hub_reachable, no_download, offline_unless_reachable

INSTALL = 'pip install "robench[open_clip]"'


class ImageClassifier(nn.Module):
    """An open_clip image tower with a fresh linear head, in the shape robench.backbone asks for."""

    def __init__(self, visual: nn.Module, num_classes: int):
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(visual.output_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return features if pre_logits else self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.visual(x))

    def get_classifier(self) -> nn.Module:
        return self.head


class OpenClip(Backbone):
    """open_clip image towers (CLIP, SigLIP, BiomedCLIP via hf-hub:...): MODEL or MODEL@TAG."""

    name = "open_clip"
    install = INSTALL

    def check(self, model: str) -> None:
        open_clip = _import()
        name, _, tag = model.partition("@")
        if not name.startswith("hf-hub:") and name not in open_clip.list_models():
            raise RobenchError(f"unknown open_clip model {name!r}: {did_you_mean(name, open_clip.list_models())}"
                               "see open_clip.list_models()")
        if tag and tag not in open_clip.list_pretrained_tags_by_model(name):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise RobenchError(f"open_clip has no weights {tag!r} for {name}: its tags are {tags}")

    def check_weights(self, model: str, weights: Path | None, pretrained: bool) -> None:
        if weights is None and pretrained:
            offline_unless_reachable()  # a download that is not cached then fails at once, not after a minute of retries

    def default_image_size(self, model: str) -> int:
        config = _import().get_model_config(model.partition("@")[0]) or {}
        size = config.get("vision_cfg", {}).get("image_size", 224)
        return int(size if isinstance(size, int) else size[0])

    def create(self, model: str, *, num_classes: int, image_size: int, weights: Path | None,
               pretrained: bool) -> tuple[nn.Module, tuple, tuple]:
        open_clip = _import()
        name, _, tag = model.partition("@")
        source = str(weights) if weights is not None else (tag or None) if pretrained else None
        if pretrained and weights is None and not tag and not name.startswith("hf-hub:"):
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise RobenchError(f"open_clip:{name} names no weights: write open_clip:{name}@TAG (tags: {tags}) or pass --weights FILE")
        try:
            clip = open_clip.create_model(name, pretrained=source, force_image_size=image_size)
        except RuntimeError as exc:
            raise RobenchError(f"weights {source} do not fit open_clip:{name} ({str(exc).splitlines()[0][:200]}): "
                               "pass the weights of this model") from None
        except (OSError, ValueError) as exc:
            if weights is None and not hub_reachable():
                raise no_download(f"open_clip:{model}") from None
            raise RobenchError(f"could not load open_clip:{name} weights {source} ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:200]}): pass a readable local checkpoint with --weights") from None
        cfg = open_clip.get_model_preprocess_cfg(clip)
        return ImageClassifier(clip.visual, num_classes), tuple(cfg["mean"]), tuple(cfg["std"])


def _import():
    return import_optional("open_clip", "--backbone open_clip:...", INSTALL)


@robench.hookimpl
def register_backbones(register):
    register(OpenClip)
