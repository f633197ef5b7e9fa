"""Every built-in strategy on each ViT family timm offers, and on the CNN baselines: each
(family, strategy) pair either trains what the strategy promises and deploys the model it trained,
or is refused in one line. docs/backbones.md's matrix must say what this file observes.

The backbones are tiny random-init variants of the timm models a user would pick, at 32x32, built
with timm's own overrides (depth, width, patch size), which keep each family's structure: CLIP's
pre-norm, DINOv2's registers, MAE's mean pooling (as MAE fine-tunes), SigLIP's attention pool,
EVA-02's RoPE and SwiGLU, ResNet's bottlenecks, ConvNeXt's LayerNorm head.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

from robench.backbone import Normalized
from robench.errors import PluginError
from robench.pipeline.train import frozen_features, head_only, to_pixels
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.linear_probe import LinearProbe
from robench_plugins.strategies.lora import LoRA
from robench_plugins.strategies.vpt import VPTDeep, VPTShallow

DOC = Path(__file__).resolve().parents[1] / "docs" / "backbones.md"
TINY = dict(img_size=32, patch_size=8, depth=2, embed_dim=64, num_heads=2)
FAMILIES = {  # as docs/backbones.md names them: (timm model, overrides that shrink it)
    "ViT (AugReg)": ("vit_tiny_patch16_224", TINY),
    "DeiT": ("deit_tiny_patch16_224", TINY),
    "DeiT distilled": ("deit_tiny_distilled_patch16_224", TINY),
    "CLIP": ("vit_base_patch16_clip_224", TINY),
    "DINOv2 + registers": ("vit_small_patch14_reg4_dinov2", TINY),
    "MAE": ("vit_base_patch16_224.mae", TINY | {"global_pool": "avg"}),
    "SigLIP": ("vit_base_patch16_siglip_224", TINY),
    "EVA-02 Ti/S": ("eva02_tiny_patch14_224", TINY | {"ref_feat_shape": (4, 4)}),
    "EVA-02 B/L": ("eva02_base_patch14_224", TINY | {"ref_feat_shape": (4, 4)}),
    "ResNet": ("resnet50", {"layers": (1, 1, 1, 1)}),
    "ConvNeXt": ("convnext_tiny", {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}),
}
STRATEGIES = {"full": Full, "linear_probe": LinearProbe, "vpt_shallow": lambda: VPTShallow(prompts=3),
              "vpt_deep": lambda: VPTDeep(prompts=3), "lora": lambda: LoRA(rank=2)}
CLASSES, PROMPTS = 3, 3


def build(family: str) -> torch.nn.Module:
    name, overrides = FAMILIES[family]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=CLASSES, **overrides)


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % CLASSES


def doc_matrix() -> dict[str, dict[str, str]]:
    """docs/backbones.md's table whose header starts ``| Family |``, as {family: {column: cell}}."""
    lines = [line.strip() for line in DOC.read_text().splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("| Family |"))
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def promised(strategy: str, adapted: torch.nn.Module) -> set[str]:
    """The parameters the strategy says it trains, by name: full all, LoRA its adapters and (a copy
    of) the head, the linear probe the head, VPT the head and the prompts."""
    names = {name for name, _ in adapted.named_parameters()}
    if strategy == "full":
        return names
    if strategy == "lora":
        return {name for name in names if ".lora_A." in name or ".lora_B." in name or ".modules_to_save." in name}
    head = next(name for name, module in adapted.named_modules() if module is adapted.get_classifier())
    return {name for name in names if name.startswith(head + ".")} | ({"prompts"} if strategy.startswith("vpt") else set())


@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_pair_works_or_is_refused_in_one_line_as_the_doc_says(family, strategy):
    cell = doc_matrix()[family][strategy]
    plugin, model = STRATEGIES[strategy](), build(family)
    try:
        adapted = plugin.adapt(model)
    except PluginError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(strategy), message
        assert cell.startswith("refused: "), f"docs/backbones.md says {family}/{strategy} {cell!r}, but: {message}"
        assert cell.removeprefix("refused: ") in message, f"the doc's reason is not in the message: {message}"
        return
    assert cell == "works", f"docs/backbones.md says {family}/{strategy} {cell!r}, but it works"

    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == promised(strategy, adapted) and trainable
    before = {name: p.detach().clone() for name, p in adapted.named_parameters()}
    buffers = {name: b.clone() for name, b in adapted.named_buffers()}
    x, y = batch()
    # Adam moves every parameter with a gradient by about lr, however small the gradient (DINOv2's and
    # ConvNeXt's layer scales start at 1e-5 and 1e-6). Two steps: LoRA's A gets a gradient once B left zero.
    optimizer = torch.optim.Adam([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        plugin.train_mode(adapted)
        logits = adapted(x)
        assert logits.shape == (len(x), CLASSES)
        optimizer.zero_grad()
        F.cross_entropy(logits, y).backward()
        optimizer.step()
    for name, value in adapted.named_parameters():
        if name in trainable:
            assert not torch.equal(value, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(value, before[name]), f"{name} should be frozen"
    if strategy != "full":  # a frozen backbone keeps its BatchNorm statistics too
        assert all(torch.equal(b, buffers[name]) for name, b in adapted.named_buffers())

    with torch.no_grad():
        trained = adapted.eval()(x)
        deployed = plugin.for_evaluation(adapted).eval()(x)
    assert deployed.shape == (len(x), CLASSES)
    torch.testing.assert_close(deployed, trained, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_default_targets_are_the_familys_attention_layers_as_the_doc_says(family):
    cell = doc_matrix()[family]["LoRA default targets"]
    try:
        adapted = LoRA(rank=2).adapt(build(family))
    except PluginError:
        assert cell == "none"
        return
    layers = {name.split(".lora_A.")[0] for name, _ in adapted.named_parameters() if ".lora_A." in name}
    assert {layer.rsplit(".", 1)[-1] for layer in layers} == set(re.findall(r"`([^`]+)`", cell))
    assert all(".blocks." in layer or ".stages." in layer for layer in layers), layers  # not the attention pool's


def test_the_doc_lists_exactly_the_tested_families_and_models():
    rows = doc_matrix()
    assert list(rows) == list(FAMILIES)
    for family, (name, _) in FAMILIES.items():
        assert rows[family]["timm model"].strip("`") == name


def test_lora_targets_option_serves_a_cnn_without_attention():
    """ConvNeXt has no attention, so the default refuses it; its MLP Linear layers can be named."""
    model = build("ConvNeXt")
    with pytest.raises(PluginError, match=r"its Linear layers are fc1, fc2: name some with lora:targets="):
        LoRA().adapt(model)
    adapted = LoRA(rank=2, targets=("fc1", "fc2")).adapt(model)
    assert sum(".lora_A." in name for name, _ in adapted.named_parameters()) == 2 * 4  # fc1 and fc2 in 4 blocks


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "DeiT distilled"])
def test_linear_probe_cached_features_give_the_models_logits(family):
    """robench.pipeline.train trains the probe on ``forward_head(forward_features(x), pre_logits=True)``."""
    adapted = LinearProbe().adapt(build(family))
    model = Normalized(adapted, (0.5,) * 3, (0.5,) * 3).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert head_only(adapted)
    with torch.no_grad():
        from_features = adapted.get_classifier()(frozen_features(model, images, 2, torch.device("cpu")))
        torch.testing.assert_close(from_features, model(to_pixels(images)), rtol=1e-5, atol=1e-6)


VPT_SERVED = ["ViT (AugReg)", "DeiT", "CLIP", "DINOv2 + registers", "MAE", "SigLIP", "EVA-02 Ti/S", "EVA-02 B/L"]


@pytest.mark.parametrize("family", VPT_SERVED)
def test_vpt_puts_prompts_after_the_prefix_tokens_and_before_the_patches(family):
    """CLS and registers stay in front; CLIP's pre-norm normalizes the prompts with the other tokens."""
    adapted = VPTDeep(prompts=PROMPTS).adapt(build(family)).eval()
    vit, seen = adapted.vit, []
    hook = vit.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        adapted(batch()[0])
        prompts = vit.norm_pre(adapted.prompts[0])
    hook.remove()
    prefix = vit.num_prefix_tokens
    assert seen[0].shape[1] == prefix + PROMPTS + vit.patch_embed.num_patches
    torch.testing.assert_close(seen[0][:, prefix:prefix + PROMPTS], prompts.expand(4, -1, -1), rtol=0, atol=0)


@pytest.mark.parametrize("family", VPT_SERVED)
def test_vpt_head_ignores_the_last_prompt_outputs(family):
    """A CLS, mean or attention-pool head reads the image's own tokens, as in pretraining."""
    adapted = VPTShallow(prompts=PROMPTS).adapt(build(family)).eval()
    prefix = adapted.vit.num_prefix_tokens
    with torch.no_grad():
        features = adapted.forward_features(batch()[0])
        changed = features.clone()
        changed[:, prefix:prefix + PROMPTS] = torch.randn_like(changed[:, prefix:prefix + PROMPTS])
        assert torch.equal(adapted.forward_head(features), adapted.forward_head(changed))


@pytest.mark.parametrize("family", VPT_SERVED)
def test_vpt_prompts_carry_no_position(family):
    """Prompts get no position embedding, nor EVA-02's RoPE rotation: their order does not matter."""
    adapted = VPTShallow(prompts=PROMPTS).adapt(build(family)).eval()
    x = batch()[0]
    with torch.no_grad():
        before = adapted(x)
        adapted.prompts.copy_(adapted.prompts.flip(1))
        torch.testing.assert_close(adapted(x), before, rtol=1e-5, atol=1e-6)
