"""Checkpoints hold what a strategy trained, load without unpickling, and bring the training facts back."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors import safe_open
from torch import nn

from robench.pipeline import checkpoints
from robench.pipeline.models import BackboneSpec, create_backbone
from robench_plugins.backbones.timm import MICRO
from robench_plugins.strategies.full import Full
from robench_plugins.strategies.linear_probe import LinearProbe

INFO = {"trainable_params": 455, "epochs": 2, "best_epoch": 2, "train_seconds": 1.25, "peak_mem_mb": 812.5}
KEY = {"strategy": "s", "seed": 0}


class Prompts(LinearProbe):
    """VPT-like: frozen backbone, learnable prompt tokens and head, and a buffer the strategy adds."""

    name = "prompts"

    def adapt(self, model):
        model = super().adapt(model)
        model.prompts = nn.Parameter(torch.randn(5, model.embed_dim))
        model.register_buffer("prompt_scale", torch.full((5,), 0.5))
        return model


def adapted(strategy, seed=0):
    torch.manual_seed(seed)
    vit, _, _ = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    own = checkpoints.base_buffers(vit)
    return strategy.adapt(vit), own


def perturb_trained(model):
    with torch.no_grad():
        for tensor in checkpoints.trained_state(model, set()).values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor))


def test_only_what_the_strategy_trained_is_stored(tmp_path):
    model, own = adapted(Prompts())
    state = checkpoints.trained_state(model, own)
    assert sorted(state) == ["head.bias", "head.weight", "prompt_scale", "prompts"]

    checkpoints.save(tmp_path / "vpt.safetensors", model, own, KEY, INFO)
    full, full_own = adapted(Full())
    checkpoints.save(tmp_path / "full.safetensors", full, full_own, KEY, INFO)
    assert (tmp_path / "vpt.safetensors").stat().st_size < 8_000  # kilobytes
    n_params = sum(p.numel() for p in full.parameters())
    assert (tmp_path / "full.safetensors").stat().st_size > 4 * n_params
    with safe_open(str(tmp_path / "full.safetensors"), framework="pt") as f:
        assert len(list(f.keys())) == len(list(full.parameters()))


def test_a_checkpoint_restores_the_trained_model_and_its_facts_without_unpickling(tmp_path, monkeypatch):
    trained, own = adapted(Prompts())
    perturb_trained(trained)
    path = tmp_path / "model.safetensors"
    checkpoints.save(path, trained, own, KEY, INFO)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint must load without pickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    fresh, fresh_own = adapted(Prompts())
    assert checkpoints.load(path, fresh, fresh_own, KEY) == INFO
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), trained.eval()(x))


@pytest.mark.parametrize("problem", ["other key", "other model", "garbage"])
def test_a_checkpoint_that_does_not_fit_is_not_loaded(tmp_path, problem):
    trained, own = adapted(Prompts())
    path = tmp_path / "model.safetensors"
    checkpoints.save(path, trained, own, KEY, INFO)
    key, strategy = KEY, LinearProbe()
    if problem == "other key":
        key, strategy = KEY | {"seed": 1}, Prompts()
    elif problem == "garbage":
        path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    fresh, fresh_own = adapted(strategy, seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    assert checkpoints.load(path, fresh, fresh_own, key) is None
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def test_the_file_name_says_which_model_and_changes_with_any_key_field(tmp_path):
    key = {"strategy": "vpt_deep(prompts=5, lr=0.5)", "seed": 2, "recipe": {"epochs": 10}}
    path = checkpoints.path_for(tmp_path, key)
    assert path.parent == tmp_path / "checkpoints"
    assert path.name.startswith("vpt_deep_prompts=5_lr=0.5-seed2-") and path.suffix == ".safetensors"
    assert checkpoints.path_for(tmp_path, key | {"recipe": {"epochs": 11}}) != path
