"""Visual prompt tuning, shallow and deep (Jia et al., "Visual Prompt Tuning", ECCV 2022).

``prompts`` learnable tokens of the embedding width sit after the prefix tokens (the CLS token,
and registers where the model has them) and before the patch tokens, ``[CLS, P, patches]``; the
pretrained backbone is frozen, only the prompts and the new head train.
- ``vpt_shallow``: one prompt set, inserted before the first block.
- ``vpt_deep``: one fresh set per block; from the second block on, the previous block's outputs
  in the prompt positions are replaced by this block's prompts.

As in the reference code (github.com/KMnP/vpt, src/models/vit_prompt/vit.py): prompts get no
position embedding (it is added to CLS and patches before they are inserted); they are drawn
from uniform(-v, v) with v = sqrt(6 / (3 * patch_h * patch_w + dim)), 0.0625 for ViT-B/16;
prompt dropout defaults to 0; the frozen encoder stays in eval mode while the prompts train.

Which timm backbones it serves, and how (docs/backbones.md has the tested matrix):
- the head reads what it read in pretraining: the CLS token (ViT, DeiT, CLIP, DINOv2), or the
  image tokens pooled by mean (MAE's fine-tuning, timm's ``*_gap_*``, EVA-02) or by the attention
  pool (SigLIP's MAP head). The last block's prompt outputs are dropped before pooling, as VPT
  drops them with a CLS head (the reference code's ``img_pool``; it also offers pooling them in);
- register tokens (DINOv2) stay with the CLS token in front of the prompts;
- CLIP's pre-norm (``norm_pre``, CLIP's ln_pre) normalizes the first prompts with every other
  token, as VPT on CLIP does in MaPLe's code (Khattak et al., CVPR 2023,
  github.com/muzairkhattak/multimodal-prompt-learning, clip/model.py); deep prompts enter later
  blocks as they are. On models without pre-norm this is the plain VPT above, bit for bit;
- EVA-02's rotary position embedding (RoPE) rotates the patch tokens only: its attention skips
  ``num_prefix_tokens`` tokens, which is raised by the prompt count, so prompts, like CLS, carry
  no position (VPT's rule), and patches keep their own rotations.
Refused in one line: CNNs, ViT subclasses that change where tokens go (distilled DeiT), and
models with no pooling.

Recipe: VPT-shallow keeps the paper's optimiser, SGD with momentum 0.9 and a cosine schedule
after a linear warm-up (10% of the epochs: 10 of 100 there, 1 of 10 here); its grid searches
large prompt learning rates (0.1 to 50) and weight decay 0 to 0.01, and robench's default, lr 0.4
(chosen by `--tune` on HAM10000) and weight decay 1e-4, sits inside it. VPT-deep trains with
AdamW at lr 3e-3: with SGD it collapsed on ViT-Ti/16 at every learning rate of the paper's grid.
Measured by `--tune lr --tune-budget 8x2` on 1,421 HAM10000 training images at 112x112 (seed 0,
validation balanced accuracy after 2 epochs; runs/tuned-b and runs/tuned-b2, docs/tuning.md):
16 SGD trials of vpt_deep (5 and 10 prompts, lr 0.007 to 5.3) all at 14.3% (one class) after
the first epoch and at most 29.8% after the second; AdamW trials at lr 2e-3 to 3e-3 reached
44.0 to 57.0%. The batch is 32, as for the other strategies, not the paper's
128: robench trains 10 epochs, not 100, and at batch 128 that is too few steps for the prompts.
Measured on 1,421 HAM10000 training images at 112x112 (ViT-Ti/16, vpt_deep, seed 0): batch 128
ends at 5.6% accuracy / 25.7% balanced accuracy after 10 epochs (110 steps) and 25.0% / 28.0%
after 30 epochs, batch 32 at 47.5% / 35.0% after 10 epochs (450 steps, a quarter of the 30-epoch
run's time). Command: ``robench run --dataset ham10000 --subset 2000 --image-size 112 --backbone
vit_tiny_patch16_224 --weights W --strategies vpt_deep:batch_size=128,vpt_deep:batch_size=128:epochs=30,vpt_deep
--attacks fgsm --eps 0.01 --seeds 0``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import robench
from robench.errors import PluginError
from robench.strategy import Recipe, SearchRange, Strategy, architecture, single_head

SERVED = (VisionTransformer, Eva)  # timm's ViT (ViT, DeiT, CLIP, DINOv2, MAE, SigLIP) and EVA/EVA-02
USED = ("_pos_embed", "forward_features", "forward_head", "pool")  # their methods the prompted pass relies on


class PromptedViT(nn.Module):
    """A frozen timm ViT (or EVA) with VPT prompts: one set (shallow) or one per block (deep)."""

    def __init__(self, vit: VisionTransformer | Eva, prompts: int, deep: bool, dropout: float):
        super().__init__()
        self.vit = vit.requires_grad_(False)
        self.vit.get_classifier().requires_grad_(True)
        dim = vit.embed_dim
        bound = math.sqrt(6 / (3 * math.prod(vit.patch_embed.patch_size) + dim))
        sets = len(vit.blocks) if deep else 1
        self.prompts = nn.Parameter(torch.empty(sets, prompts, dim).uniform_(-bound, bound))
        self.prompt_dropout = nn.Dropout(dropout)
        self.deep = deep
        if isinstance(vit, Eva):  # RoPE skips the first num_prefix_tokens tokens: CLS and now the prompts
            for block in vit.blocks:
                block.attn.num_prefix_tokens = vit.num_prefix_tokens + prompts

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``forward_features`` with the prompts put in front of each block (see the module docstring)."""
        vit, rope = self.vit, None
        if isinstance(vit, Eva):
            x, rope = vit._pos_embed(vit.patch_embed(x))  # EVA's _pos_embed applies its patch dropout too
        else:
            x = vit.patch_drop(vit._pos_embed(vit.patch_embed(x)))
        prefix, count = vit.num_prefix_tokens, self.prompts.shape[1]
        for index, block in enumerate(vit.blocks):
            if index == 0 or self.deep:
                prompts = self.prompt_dropout(self.prompts[index]).expand(x.shape[0], -1, -1)
                patches = x[:, prefix:] if index == 0 else x[:, prefix + count :]
                x = torch.cat([x[:, :prefix], prompts, patches], dim=1)
            if index == 0:
                x = vit.norm_pre(x)  # CLIP's ln_pre; nn.Identity elsewhere
            if rope is None:
                x = block(x)
            else:
                x = block(x, rope=rope[index] if getattr(vit, "rope_mixed", False) else rope)
        return vit.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The backbone's head on its own tokens: the last prompt outputs are dropped before a mean
        or attention pool (a CLS head reads token 0 alone, so its input is left as it is)."""
        if self.vit.global_pool != "token":
            prefix, count = self.vit.num_prefix_tokens, self.prompts.shape[1]
            x = torch.cat([x[:, :prefix], x[:, prefix + count :]], dim=1)
        return self.vit.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.vit.get_classifier()

    def train(self, mode: bool = True) -> PromptedViT:
        """Only the prompt dropout follows ``mode``: the frozen backbone stays in eval mode."""
        super().train(mode)
        self.vit.eval()
        return self


def check_servable(model: nn.Module, strategy: str) -> None:
    """Refuse a backbone on which the prompted forward pass would not be timm's plus prompts."""
    arch = architecture(model)
    base = next((cls for cls in SERVED if isinstance(model, cls)), None)
    if base is None:
        raise PluginError(
            f"{strategy} needs a timm VisionTransformer or Eva (ViT, DeiT, CLIP, DINOv2, MAE, SigLIP, EVA-02), "
            f"not {arch} ({type(model).__name__}): pick a ViT backbone or another strategy (full, linear_probe)"
        )
    cls = type(model)
    for method in USED:
        if getattr(cls, method) is not getattr(base, method):
            raise PluginError(f"{strategy} cannot serve {arch}: {cls.__name__} changes {base.__name__}.{method}, which the prompted "
                              f"forward pass builds on; use a plain ViT or DeiT (e.g. deit_tiny_patch16_224)")
    if not model.global_pool:
        raise PluginError(f"{strategy} cannot serve {arch}: with global_pool='' its head reads every token, prompts included; "
                          f"build it with global_pool='token' or 'avg'")
    if base is Eva and not all(hasattr(block.attn, "num_prefix_tokens") for block in model.blocks):
        raise PluginError(f"{strategy} cannot serve {arch}: its attention does not say which tokens RoPE skips, so prompts would get positions")


MAX_PROMPTS = 1_000


class _VPT(Strategy):
    deep: ClassVar[bool]
    # lr: chosen by --tune on HAM10000 for VPT-shallow (docs/tuning.md, "Defaults re-derived")
    recipe = Recipe(optimizer="sgd", lr=0.4, weight_decay=1e-4, momentum=0.9, epochs=10, warmup_epochs=1,
                    schedule="cosine", batch_size=32)
    # The paper's grid (Jia et al. 2022, Appendix A): base lr 0.05 to 50 for a batch of 256, scaled
    # linearly with the batch size; weight decay 1e-4 to 1e-2.
    search_space = {"lr": SearchRange(0.05, 50.0, per_256=True), "weight_decay": SearchRange(1e-4, 1e-2)}

    def __init__(self, prompts: int = 10, dropout: float = 0.0):
        if not 1 <= prompts <= MAX_PROMPTS:  # checked before any prompt is allocated
            raise ValueError(f"prompts must be from 1 to {MAX_PROMPTS} (the paper's largest is 200), got {prompts}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.prompts, self.dropout = prompts, dropout

    def adapt(self, model: nn.Module) -> nn.Module:
        check_servable(model, self.name)
        single_head(model, self.name)
        return PromptedViT(model, self.prompts, self.deep, self.dropout)


class VPTShallow(_VPT):
    """VPT-shallow (Jia et al. 2022): prompts before the first block; frozen ViT, head as pretrained."""

    name = "vpt_shallow"
    deep = False


class VPTDeep(_VPT):
    """VPT-deep (Jia et al. 2022): a fresh prompt set before every block; frozen ViT, head as pretrained."""

    name = "vpt_deep"
    deep = True
    # AdamW, not the paper's SGD: on ViT-Ti/16 every one of 16 SGD trials across the paper's grid
    # (lr 0.006 to 6 at batch 32) left VPT-deep answering one class after its first epoch (module
    # docstring); AdamW at 3e-3 reached 48.5% (5 prompts) and 57.0% (10) validation balanced accuracy.
    recipe = _VPT.recipe.override(optimizer="adamw", lr=3e-3)
    search_space = {"lr": SearchRange(1e-4, 3e-2), "weight_decay": SearchRange(1e-4, 1e-2)}


@robench.hookimpl
def register_strategies(register):
    register(VPTShallow)
    register(VPTDeep)
