"""Linear probe: the pretrained backbone is frozen and only the classification head trains.

Because nothing before the head changes and the recipe does no augmentation, robench computes
the backbone's features once per split and trains the head on them (see robench.pipeline.train), so
ten epochs cost one backbone pass. Defaults: AdamW, lr 1e-3, 30 epochs on cached features.

"The head" is ``get_classifier()``, the last Linear layer, on any timm model with one: ViTs, CNNs
(resnet50's ``fc`` on pooled features; convnext's ``head.fc``, after its pretrained, frozen
``head.norm``), SigLIP's Linear after its frozen attention pool. The cached features are its input,
``forward_head(forward_features(x), pre_logits=True)``. docs/backbones.md has the tested matrix.
"""

from torch import nn

import robench
from robench.strategy import Recipe, SearchRange, Strategy, single_head


class LinearProbe(Strategy):
    """Linear probe: frozen backbone, only the classification head trains."""

    name = "linear_probe"
    # lr: chosen by --tune on HAM10000 (docs/tuning.md, "Defaults re-derived")
    recipe = Recipe(optimizer="adamw", lr=1.4e-2, weight_decay=1e-4, epochs=30, warmup_epochs=0, batch_size=64, augment=False)
    search_space = {"lr": SearchRange(1e-4, 1e-1), "weight_decay": SearchRange(1e-6, 1e-2)}

    def adapt(self, model: nn.Module) -> nn.Module:
        head = single_head(model, self.name)
        model.requires_grad_(False)
        head.requires_grad_(True)
        return model

    def train_mode(self, model: nn.Module) -> None:
        model.eval()
        model.get_classifier().train()


@robench.hookimpl
def register_strategies(register):
    register(LinearProbe)
