"""Full fine-tuning: every parameter of the pretrained ViT trains.

It needs a small learning rate and a warm-up, or it forgets its pretraining and collapses to
the majority class (the seed study's full-FT accuracy, 67.96%, is what always answering `nv`
scores on HAM10000). Defaults follow DeiT/timm fine-tuning practice: AdamW, lr 1e-4,
weight decay 0.05, cosine schedule after one warm-up epoch (Touvron et al. 2021; VPT's own
full-FT grid is 1e-4 to 5e-3, Jia et al. 2022, Appendix A).
"""

from torch import nn

import robench
from robench.strategy import Recipe, Strategy


class Full(Strategy):
    """Full fine-tuning: every parameter of the backbone and the head trains."""

    name = "full"
    recipe = Recipe(optimizer="adamw", lr=1e-4, weight_decay=0.05, epochs=10, warmup_epochs=1, batch_size=32)

    def adapt(self, model: nn.Module) -> nn.Module:
        model.requires_grad_(True)
        return model


@robench.hookimpl
def register_strategies(register):
    register(Full)
