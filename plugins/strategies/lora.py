"""LoRA: low-rank adapters on frozen weights (Hu et al., "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022, arXiv 2106.09685), built with Hugging Face peft.

Each adapted Linear layer W x becomes W x + (alpha / rank) * B A x, with A random and B zero at
initialisation, so the adapted model starts exactly as the pretrained one. Only A, B and the new
classification head train (peft's ``modules_to_save``). For evaluation and attacks the adapters are
merged into the weights (W + (alpha/rank) B A), the model a user would deploy, so timings and
gradients are those of the plain backbone (peft #1334).

Default targets: the attention's input projections, named as the family's timm attention names
them (docs/backbones.md lists them per family). timm fuses q, k and v into one Linear, ``qkv``,
in ViT, DeiT, CLIP, DINOv2, MAE, SigLIP and EVA-02 Ti/S: one rank-r update of the fused matrix
adapts all three (the paper adapts W_q and W_v with separate updates). EVA-02 B/L keep them apart,
``q_proj``, ``k_proj``, ``v_proj``: one update each. A model with neither (or ``q`` + ``kv``) has
no attention to adapt (resnet50) and is refused, naming the Linear layers it has. ``targets``
names Linear layers by their last name, joined with ``+``: ``lora:targets=qkv+proj+fc1+fc2``, or
``lora:targets=fc1+fc2`` for convnext's MLPs. SigLIP's attention-pool head keeps its pretrained,
frozen weights unless ``targets`` names its layers.

EVA-02 Ti/S and BEiT add separate q and v biases by calling ``F.linear(x, qkv.weight, bias)``,
which would skip an adapter wrapped around ``qkv``: their ``qkv_bias_separate`` switch makes them
call ``qkv(x)`` and add the bias after, the same function with the adapter in it.

Recipe: AdamW with a linear warm-up, as in the paper (Appendix D: AdamW, warm-up, lr 2e-4 to
5e-4; weight decay 0.01 for GPT-2); lr 5e-4 and a cosine decay like the other strategies.
``alpha`` defaults to 8 and stays fixed when ``rank`` changes, as the paper does (it sets alpha
to the first rank tried and scales by alpha / rank so that rank can change without retuning).
"""

from __future__ import annotations

import math

from peft import LoraConfig, get_peft_model
from torch import nn

import robench
from robench.errors import PluginError
from robench.strategy import Recipe, SearchRange, Strategy, architecture, single_head

# The attention input projections of timm's families, by their Linear layers' last names, first match wins.
ATTENTION_TARGETS = (("qkv",), ("q_proj", "k_proj", "v_proj"), ("q", "kv"))


MAX_RANK = 4_096  # beyond any ViT's width: a typo, not an adapter


class LoRA(Strategy):
    """LoRA (Hu et al. 2021) via peft: low-rank adapters on the attention projections (by default) and the head train."""

    name = "lora"
    # lr: chosen by --tune on HAM10000 (docs/tuning.md, "Defaults re-derived")
    recipe = Recipe(optimizer="adamw", lr=2.7e-3, weight_decay=0.01, epochs=10, warmup_epochs=1, batch_size=32)
    search_space = {"lr": SearchRange(1e-4, 1e-2), "weight_decay": SearchRange(1e-4, 0.1)}  # around the paper's 2e-4 to 5e-4 and above

    def __init__(self, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0, targets: tuple[str, ...] | None = None):
        if not 1 <= rank <= MAX_RANK:  # checked before peft allocates anything
            raise ValueError(f"rank must be from 1 to {MAX_RANK:,} (the paper's largest is 64), got {rank}")
        if not 0 < alpha < math.inf:  # nan too
            raise ValueError(f"alpha must be a finite number > 0, got {alpha}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.targets = tuple(targets) if targets else None  # None: the family's attention projections

    def adapt(self, model: nn.Module) -> nn.Module:
        head = _module_name(model, single_head(model, self.name))
        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name != head]
        available = sorted({name.rsplit(".", 1)[-1] for name in linears})
        targets = self.targets or default_targets(available)
        if targets is None:
            raise PluginError(
                f"lora: {architecture(model)} has no attention projections to adapt by default (Linear layers named "
                f"{', '.join('+'.join(t) for t in ATTENTION_TARGETS)}); its Linear layers are {', '.join(available) or 'none but the head'}: "
                + ("name some with lora:targets=NAME+NAME, or use full or linear_probe" if available else "use full or linear_probe")
            )
        chosen = [name for name in linears if name.rsplit(".", 1)[-1] in targets]
        missing = set(targets) - {name.rsplit(".", 1)[-1] for name in chosen}
        if missing:
            raise PluginError(
                f"lora: the backbone has no Linear layer named {', '.join(sorted(missing))}: "
                f"targets must be names of its Linear layers, here {', '.join(available) or 'none'} (the head always trains)"
            )
        _call_fused_qkv_through_its_module(model, chosen)
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=chosen, modules_to_save=[head])
        return get_peft_model(model, config)

    def for_evaluation(self, model: nn.Module) -> nn.Module:
        """The timm model with ``W + (alpha / rank) B A`` merged into each adapted layer."""
        return model.merge_and_unload()


def default_targets(linear_names) -> tuple[str, ...] | None:
    """The first of ATTENTION_TARGETS whose names are all among the model's Linear layers."""
    return next((family for family in ATTENTION_TARGETS if set(family) <= set(linear_names)), None)


def _call_fused_qkv_through_its_module(model: nn.Module, chosen: list[str]) -> None:
    """EVA/BEiT attention with q/v biases reads ``qkv.weight`` itself unless ``qkv_bias_separate``."""
    for name in chosen:
        parent = model.get_submodule(name.rpartition(".")[0])
        if name.endswith(".qkv") and getattr(parent, "q_bias", None) is not None:
            if not hasattr(parent, "qkv_bias_separate"):
                raise PluginError(f"lora cannot adapt {name}: {type(parent).__name__} reads qkv.weight directly, so an adapter "
                                  f"there would never run; name other layers with lora:targets=... or use another strategy")
            parent.qkv_bias_separate = True


def _module_name(model: nn.Module, target: nn.Module) -> str | None:
    return next((name for name, module in model.named_modules() if module is target), None)


@robench.hookimpl
def register_strategies(register):
    register(LoRA)
