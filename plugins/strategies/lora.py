"""LoRA: low-rank adapters on frozen weights (Hu et al., "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022, arXiv 2106.09685), built with Hugging Face peft.

Each adapted Linear layer W x becomes W x + (alpha / rank) * B A x, with A random and B zero at
initialisation, so the adapted model starts exactly as the pretrained one. Only A, B and the new
classification head train (peft's ``modules_to_save``). timm fuses the attention's q, k and v
projections into one Linear, ``qkv``, so the default target adapts all three with one rank-r
update of the fused matrix (the paper adapts W_q and W_v with separate updates). ``targets``
names more Linear layers by their last name, joined with ``+``: ``lora:targets=qkv+proj+fc1+fc2``.
For evaluation and attacks the adapters are merged into the weights (W + (alpha/rank) B A), the
model a user would deploy, so timings and gradients are those of a plain ViT (peft #1334).

Recipe: AdamW with a linear warm-up, as in the paper (Appendix D: AdamW, warm-up, lr 2e-4 to
5e-4; weight decay 0.01 for GPT-2); lr 5e-4 and a cosine decay like the other strategies.
``alpha`` defaults to 8 and stays fixed when ``rank`` changes, as the paper does (it sets alpha
to the first rank tried and scales by alpha / rank so that rank can change without retuning).
"""

from __future__ import annotations

from peft import LoraConfig, get_peft_model
from torch import nn

import robench
from robench.errors import PluginError
from robench.strategy import Recipe, Strategy


class LoRA(Strategy):
    """LoRA (Hu et al. 2021) via peft: low-rank adapters on qkv (by default) and the head train."""

    name = "lora"
    recipe = Recipe(optimizer="adamw", lr=5e-4, weight_decay=0.01, epochs=10, warmup_epochs=1, batch_size=32)

    def __init__(self, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0, targets: tuple[str, ...] = ("qkv",)):
        if rank < 1:
            raise ValueError(f"rank must be at least 1, got {rank}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.rank, self.alpha, self.dropout, self.targets = rank, alpha, dropout, tuple(targets)

    def adapt(self, model: nn.Module) -> nn.Module:
        head = _module_name(model, model.get_classifier()) if hasattr(model, "get_classifier") else None
        if not head:
            raise PluginError(f"lora needs a timm model with a classification head (get_classifier()), not {type(model).__name__}")
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name != head]
        chosen = [name for name in linears if name.rsplit(".", 1)[-1] in self.targets]
        missing = set(self.targets) - {name.rsplit(".", 1)[-1] for name in chosen}
        if missing:
            available = sorted({name.rsplit(".", 1)[-1] for name in linears})
            raise PluginError(
                f"lora: the backbone has no Linear layer named {', '.join(sorted(missing))}: "
                f"targets must be names of its Linear layers, here {', '.join(available) or 'none'} (the head always trains)"
            )
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=chosen, modules_to_save=[head])
        return get_peft_model(model, config)

    def for_evaluation(self, model: nn.Module) -> nn.Module:
        """The timm model with ``W + (alpha / rank) B A`` merged into each adapted layer."""
        return model.merge_and_unload()


def _module_name(model: nn.Module, target: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if module is target), None)


@robench.hookimpl
def register_strategies(register):
    register(LoRA)
