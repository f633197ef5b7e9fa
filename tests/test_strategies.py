"""The built-in strategies do what their papers define: what trains, what the blocks see, what is deployed."""

from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import torch
from torch import nn

from robench.errors import PluginError
from robench.pipeline.models import Normalized
from robench.pipeline.train import train
from robench.strategy import Recipe, Strategy
from robench_plugins.backbones.timm import MICRO
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.linear_probe import LinearProbe
from robench_plugins.strategies.lora import LoRA
from robench_plugins.strategies.vpt import VPTDeep, VPTShallow
from tests.test_cli import FAST, run_cli
from tests.test_train import _data

DIM, DEPTH, PATCHES, CLASSES = 64, 4, 64, 7  # the micro ViT: 32x32 images, 4x4 patches
HEAD = DIM * CLASSES + CLASSES
STEP = Recipe(epochs=1, batch_size=7, lr=1e-2, warmup_epochs=0, augment=False)


def fit(adapted: nn.Module, strategy, mean, std, recipe=STEP, seed=0) -> Normalized:
    model = Normalized(adapted, mean, std)
    train(model, strategy, recipe, _data(28, 1), _data(14, 2), CLASSES, seed, torch.device("cpu"))
    return model


def images(n=3, seed=5):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- every strategy


def _is_lora(name):
    return "lora_" in name or "modules_to_save" in name


CASES = {
    "full": (Full(), lambda name: True),
    "full:layer_decay": (Full(layer_decay=0.5), lambda name: True),
    "linear_probe": (LinearProbe(), lambda name: name.startswith("head.")),
    "vpt_shallow": (VPTShallow(prompts=3), lambda name: name in {"prompts", "vit.head.weight", "vit.head.bias"}),
    "vpt_deep": (VPTDeep(prompts=3), lambda name: name in {"prompts", "vit.head.weight", "vit.head.bias"}),
    "lora": (LoRA(rank=2), _is_lora),
    "lora:targets": (LoRA(rank=2, targets=("qkv", "proj", "fc1", "fc2")), _is_lora),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exactly_the_trainable_parameters_change(micro_vit, case):
    strategy, should_train = CASES[case]
    vit, mean, std = micro_vit
    adapted = strategy.adapt(vit)
    before = {name: p.detach().clone() for name, p in adapted.named_parameters()}
    trainable = {name for name, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == {name for name in before if should_train(name)}
    fit(adapted, strategy, mean, std)
    for name, value in adapted.named_parameters():
        if name in trainable:
            assert not torch.equal(value, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(value, before[name]), f"{name} should be frozen"


# ---------------------------------------------------------------- VPT


def block_inputs(adapted, x):
    """What each transformer block receives, via forward pre-hooks."""
    seen = []
    hooks = [block.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach())) for block in adapted.vit.blocks]
    with torch.no_grad():
        adapted(x)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("strategy", [VPTShallow(prompts=5), VPTDeep(prompts=5)], ids=lambda s: s.name)
def test_blocks_see_cls_then_prompts_then_patches(micro_vit, strategy):
    adapted = strategy.adapt(micro_vit[0]).eval()
    seen = block_inputs(adapted, images())
    assert len(seen) == DEPTH
    assert all(x.shape == (3, 1 + 5 + PATCHES, DIM) for x in seen)
    # the first block's prompt slots hold the prompts themselves, without position embedding
    torch.testing.assert_close(seen[0][:, 1:6], adapted.prompts[0].expand(3, -1, -1), rtol=0, atol=0)


def test_deep_replaces_each_blocks_prompt_slots_with_its_own_set(micro_vit):
    adapted = VPTDeep(prompts=4).adapt(micro_vit[0]).eval()
    assert adapted.prompts.shape == (DEPTH, 4, DIM)
    x = images()
    seen = block_inputs(adapted, x)
    for i in range(DEPTH):
        torch.testing.assert_close(seen[i][:, 1:5], adapted.prompts[i].expand(3, -1, -1), rtol=0, atol=0)
    # layer 1's prompts reach block 2 only through attention: its CLS and patches, not its prompt slots
    with torch.no_grad():
        adapted.prompts[0].add_(1.0)
    changed = block_inputs(adapted, x)[1]
    assert torch.equal(changed[:, 1:5], seen[1][:, 1:5])
    assert not torch.equal(changed[:, :1], seen[1][:, :1]) and not torch.equal(changed[:, 5:], seen[1][:, 5:])


def test_shallow_prompts_are_only_at_the_input(micro_vit):
    adapted = VPTShallow(prompts=4).adapt(micro_vit[0]).eval()
    assert adapted.prompts.shape == (1, 4, DIM)
    seen = block_inputs(adapted, images())
    assert not torch.allclose(seen[1][:, 1:5], adapted.prompts[0].expand(3, -1, -1))  # block 1's own outputs


@pytest.mark.parametrize("deep", [False, True], ids=["shallow", "deep"])
def test_logits_follow_the_paper_pos_embed_before_prompts_head_on_cls(micro_vit, deep):
    """An independent write-up of VPT's forward pass (KMnP/vpt vit.py) gives the same logits."""
    strategy = VPTDeep(prompts=3) if deep else VPTShallow(prompts=3)
    adapted = strategy.adapt(micro_vit[0]).eval()
    vit, prompts, x = adapted.vit, adapted.prompts, images()
    with torch.no_grad():
        tokens = torch.cat([vit.cls_token.expand(3, -1, -1), vit.patch_embed(x)], dim=1) + vit.pos_embed
        tokens = torch.cat([tokens[:, :1], prompts[0].expand(3, -1, -1), tokens[:, 1:]], dim=1)
        for i, block in enumerate(vit.blocks):
            if deep and i > 0:
                tokens = torch.cat([tokens[:, :1], prompts[i].expand(3, -1, -1), tokens[:, 4:]], dim=1)
            tokens = block(tokens)
        expected = vit.head(vit.norm(tokens)[:, 0])
        torch.testing.assert_close(adapted(x), expected)


def test_register_tokens_stay_in_front_of_the_prompts():
    vit = timm.create_model(MICRO, num_classes=CLASSES, reg_tokens=2)
    adapted = VPTDeep(prompts=3).adapt(vit).eval()
    seen = block_inputs(adapted, images())
    assert seen[0].shape == (3, 1 + 2 + 3 + PATCHES, DIM)
    for i in range(DEPTH):
        torch.testing.assert_close(seen[i][:, 3:6], adapted.prompts[i].expand(3, -1, -1), rtol=0, atol=0)


@pytest.mark.parametrize("p", [1, 5, 50])
def test_trainable_counts_are_the_closed_form(micro_vit, p):
    vit = micro_vit[0]
    shallow = VPTShallow(prompts=p).adapt(copy.deepcopy(vit))
    deep = VPTDeep(prompts=p).adapt(copy.deepcopy(vit))
    count = lambda m: sum(x.numel() for x in m.parameters() if x.requires_grad)  # noqa: E731
    assert count(shallow) == p * DIM + HEAD
    assert count(deep) == DEPTH * p * DIM + HEAD


def test_prompt_init_is_uniform_with_the_papers_bound(micro_vit):
    adapted = VPTDeep(prompts=50).adapt(micro_vit[0])
    bound = math.sqrt(6 / (3 * 4 * 4 + DIM))  # patch 4x4 here; 0.0625 for ViT-B/16
    assert math.sqrt(6 / (3 * 16 * 16 + 768)) == 0.0625
    values = adapted.prompts.detach()
    assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound
    assert abs(values.mean()) < 0.05 * bound


@pytest.mark.parametrize("strategy", [VPTShallow(dropout=0.5), VPTDeep(dropout=0.5)], ids=lambda s: s.name)
def test_frozen_backbone_stays_in_eval_mode_while_prompts_train(micro_vit, strategy):
    adapted = strategy.adapt(micro_vit[0])
    strategy.train_mode(adapted)
    assert adapted.training and adapted.prompt_dropout.training
    assert not any(module.training for module in adapted.vit.modules())
    x = images()
    assert not torch.equal(adapted(x), adapted(x))  # prompt dropout acts in training...
    adapted.eval()
    assert torch.equal(adapted(x), adapted(x))  # ...and not in evaluation


def test_vpt_refuses_backbones_it_cannot_serve(micro_vit):
    no_pool = timm.create_model(MICRO, num_classes=CLASSES, global_pool="")
    with pytest.raises(PluginError, match="global_pool='' its head reads every token"):
        VPTShallow().adapt(no_pool)
    distilled = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=CLASSES, img_size=32)
    with pytest.raises(PluginError, match="changes VisionTransformer._pos_embed"):
        VPTDeep().adapt(distilled)
    with pytest.raises(PluginError, match="needs a timm VisionTransformer"):
        VPTDeep().adapt(timm.create_model("resnet10t", num_classes=CLASSES))


def test_lora_starts_as_the_base_model_and_merging_keeps_the_trained_function(micro_vit):
    vit, mean, std = micro_vit
    base = copy.deepcopy(vit).eval()
    strategy = LoRA(rank=4)
    adapted = strategy.adapt(vit)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(adapted.eval()(x), base(x), rtol=0, atol=1e-6)
    fit(adapted, strategy, mean, std, STEP.override(epochs=2))
    assert any(p.abs().sum() > 0 for n, p in adapted.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        unmerged = adapted.eval()(x)
        merged_model = strategy.for_evaluation(adapted).eval()
        merged = merged_model(x)
    assert not torch.allclose(unmerged, base(x), atol=1e-3)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert isinstance(merged_model, timm.models.VisionTransformer)
    assert not any("lora" in name or "modules_to_save" in name for name, _ in merged_model.named_parameters())


def test_lora_adapts_the_named_linear_layers_only(micro_vit):
    adapted = LoRA(rank=2, targets=("qkv", "fc2")).adapt(copy.deepcopy(micro_vit[0]))
    adapted_layers = {n.split(".lora_A")[0] for n, _ in adapted.named_parameters() if ".lora_A." in n}
    assert adapted_layers == {f"base_model.model.blocks.{i}.{layer}" for i in range(DEPTH) for layer in ("attn.qkv", "mlp.fc2")}
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert trainable == DEPTH * 2 * ((DIM + 3 * DIM) + (2 * DIM + DIM)) + HEAD  # rank * (in + out) per layer
    # `proj` names the attention's output Linear, not the patch embedding's Conv2d of the same name
    with_proj = LoRA(rank=2, targets=("proj",)).adapt(copy.deepcopy(micro_vit[0]))
    assert not any("patch_embed" in n for n, _ in with_proj.named_parameters() if "lora_" in n)


def test_lora_names_the_linear_layers_when_a_target_is_missing(micro_vit):
    with pytest.raises(PluginError, match="no Linear layer named qvk.*here fc1, fc2, proj, qkv"):
        LoRA(targets=("qvk",)).adapt(micro_vit[0])


# ---------------------------------------------------------------- full


def test_layer_decay_scales_each_blocks_learning_rate(micro_vit):
    """One AdamW step moves each weight by about lr * scale: the scale must reach the optimizer."""
    vit, mean, std = micro_vit
    before = copy.deepcopy(vit.state_dict())
    recipe = Recipe(epochs=1, batch_size=28, lr=1e-3, weight_decay=0.0, warmup_epochs=0, augment=False)
    fit(Full(layer_decay=0.5).adapt(vit), Full(layer_decay=0.5), mean, std, recipe)
    step = {name: (value - before[name]).abs().max().item() for name, value in vit.state_dict().items()}
    for i in range(DEPTH):
        assert step[f"blocks.{i}.mlp.fc1.weight"] == pytest.approx(1e-3 * 0.5 ** (DEPTH - i), rel=0.02)
    assert step["pos_embed"] == pytest.approx(1e-3 * 0.5 ** (DEPTH + 1), rel=0.02)
    assert step["head.weight"] == pytest.approx(1e-3, rel=0.02)


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("strategies", "message"),
    [
        ("vpt_deep:prompts=0", "invalid strategy 'vpt_deep:prompts=0': prompts must be from 1 to 1000"),
        ("vpt_deep:prompts=abc", "option prompts: expected a whole number, got 'abc'"),
        ("vpt_shallow:promts=5", "unknown option 'promts' for strategy 'vpt_shallow'"),
        ("vpt_deep:dropout=1.5", "dropout must be in [0, 1)"),
        ("lora:rank=0", "rank must be from 1 to 4,096"),
        ("lora:targets=qkv+nope", "no Linear layer named nope"),
        ("full:layer_decay=2", "layer_decay must be in (0, 1]"),
    ],
)
def test_bad_strategy_options_are_one_line_and_exit_code_2(capsys, tmp_path, strategies, message):
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", f"full,{strategies}", "--out", str(tmp_path / "r"),
                           "--leaderboard-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and err.startswith("robench: error: ")
    assert message in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_a_backbone_vpt_cannot_serve_fails_before_any_training(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", *FAST, "--backbone", "resnet10t", "--image-size", "32",
                           "--strategies", "full,vpt_deep", "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "vpt_deep needs a timm VisionTransformer or Eva" in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_the_seed_study_grid_is_one_command_with_a_row_per_variant(capsys, tmp_path):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "run", *FAST, "--epochs", "1", "--strategies",
        "full,vpt_deep:prompts=5,vpt_deep:prompts=10,vpt_deep:prompts=50:lr=0.5,vpt_shallow,lora",
        "--attacks", "fgsm", "--eps", "0.01", "--out", str(out_dir), "--leaderboard-dir", str(tmp_path), "--name", "grid",
    )
    assert code == 0, err
    board = (tmp_path / "grid.md").read_text()
    expected = {"full": 141831, "vpt_deep(prompts=5)": DEPTH * 5 * DIM + HEAD, "vpt_deep(prompts=10)": DEPTH * 10 * DIM + HEAD,
                "vpt_deep(prompts=50, lr=0.5)": DEPTH * 50 * DIM + HEAD, "vpt_shallow": 10 * DIM + HEAD,
                "lora": DEPTH * 8 * (DIM + 3 * DIM) + HEAD}
    for heading in ("## At a glance", "## Robust accuracy"):  # one row per variant in both tables (after their rank)
        rows = [line for line in board.split(heading, 1)[1].split("\n\n", 2)[1].splitlines() if line.startswith("| ")]
        for label in expected:
            assert sum(bool(re.match(rf"\| (\S+ +\| )?{re.escape(label)} ", row)) for row in rows) == 1, (heading, label)
    from robench.core.results import read_rows

    clean = {r["strategy"]: r for r in read_rows(out_dir) if r["attack"] == "none"}
    assert {label: clean[label]["trainable_params"] for label in expected} == expected
    assert all(r["peak_mem_mb"] > 0 and r["seconds_per_epoch"] > 0 for r in clean.values())
    assert "peak MiB" in board


def test_a_strategy_whose_adapt_raises_anything_is_one_line_naming_it(micro_vit):
    """A third party's adapt may raise any exception; the run refuses before training, in one line."""
    from robench.pipeline.plan import Planned, check_strategies_fit

    class Clumsy(Strategy):
        name = "clumsy"

        def adapt(self, model):
            return model.no_such_attribute

    with pytest.raises(PluginError) as info:
        check_strategies_fit([Planned("clumsy", Clumsy())], micro_vit[0], "robench_vit_micro")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"strategy clumsy (package {__name__}) cannot adapt backbone "
                                                       "robench_vit_micro (AttributeError:")
