"""Full fine-tuning: every parameter of the pretrained backbone trains.

It serves every timm model with one classification head: the ViT families and the CNNs
researchers compare them with (resnet50, convnext_tiny); docs/backbones.md has the tested matrix.

It needs a small learning rate and a warm-up, or it forgets its pretraining and collapses to
the majority class (the seed study's full-FT accuracy, 67.96%, is what always answering `nv`
scores on HAM10000). Defaults follow DeiT/timm fine-tuning practice: AdamW, lr 1e-4,
weight decay 0.05, cosine schedule after one warm-up epoch (Touvron et al. 2021; VPT's own
full-FT grid is 1e-4 to 5e-3, Jia et al. 2022, Appendix A).

``layer_decay`` (off by default; ``full:layer_decay=0.75``) scales the learning rate of block i
(from 0) by layer_decay ** (depth - i), of the embeddings by layer_decay ** (depth + 1), and
leaves the final norm and the head at the full rate, so the early, most general layers move
least (BEiT, Bao et al. 2022; timm's ``layer_decay`` through the ViT's ``group_matcher``).
"""

from torch import nn

import robench
from robench.strategy import Recipe, SearchRange, Strategy, single_head


class Full(Strategy):
    """Full fine-tuning: every parameter of the backbone and the head trains."""

    name = "full"
    # lr: chosen by --tune on HAM10000 (docs/tuning.md, "Defaults re-derived")
    recipe = Recipe(optimizer="adamw", lr=1.6e-4, weight_decay=0.05, epochs=10, warmup_epochs=1, batch_size=32)
    search_space = {"lr": SearchRange(1e-5, 1e-3), "weight_decay": SearchRange(1e-3, 0.3)}  # AdamW's usual fine-tuning ranges

    def __init__(self, layer_decay: float | None = None):
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], e.g. 0.75, got {layer_decay}")
        self.layer_decay = layer_decay

    def adapt(self, model: nn.Module) -> nn.Module:
        single_head(model, self.name, required=False)  # refuses a distilled DeiT's two heads
        model.requires_grad_(True)
        return model

    def optimizer_options(self) -> dict:
        return {} if self.layer_decay is None else {"layer_decay": self.layer_decay}


@robench.hookimpl
def register_strategies(register):
    register(Full)
