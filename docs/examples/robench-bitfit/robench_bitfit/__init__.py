"""BitFit: fine-tune only the bias terms (and the new head) of a pretrained transformer.

Ben Zaken, Ravfogel and Goldberg, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models", ACL 2022. About 0.1% of a ViT's parameters train.
"""

from torch import nn

import robench
from robench.strategy import Recipe, Strategy


class BitFit(Strategy):
    """BitFit (Ben Zaken et al. 2022): only bias terms and the classification head train."""

    name = "bitfit"
    recipe = Recipe(optimizer="adamw", lr=1e-3, weight_decay=0.0, epochs=10, warmup_epochs=1, batch_size=32)

    def __init__(self, train_norms: bool = False):
        self.train_norms = train_norms  # also train LayerNorm scales, a common variant

    def adapt(self, model: nn.Module) -> nn.Module:
        for name, param in model.named_parameters():
            is_norm = ".norm" in name or name.startswith("norm")
            param.requires_grad_(name.endswith(".bias") or (self.train_norms and is_norm))
        model.get_classifier().requires_grad_(True)
        return model


@robench.hookimpl
def register_strategies(register):
    register(BitFit)
