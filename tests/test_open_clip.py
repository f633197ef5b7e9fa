"""The open_clip backbone provider on a random-init tiny open_clip ViT: built, adapted, trained,
loaded from a local file, run end to end; and one line for every name it cannot build."""

from __future__ import annotations

import json

import pytest
import torch

from robench.backbone import BackboneSpec
from robench.cli import main
from robench.core.results import read_rows
from robench.errors import PluginError, RobenchError
from robench.pipeline.models import create_backbone, parse_backbone
from robench.pipeline.registry import load_registry

open_clip = pytest.importorskip("open_clip")

TINY = "robench-tiny-clip"


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    """A 2-block open_clip ViT registered in open_clip's own model registry, as a user's config would be."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(folder)


def tiny(num_classes: int = 3):
    return create_backbone(BackboneSpec(TINY, 32, pretrained=False, provider="open_clip"), num_classes)


def test_prefix_picks_the_provider_and_timm_stays_the_default():
    assert parse_backbone(f"open_clip:{TINY}") == ("open_clip", TINY)
    assert parse_backbone("vit_tiny_patch16_224") == ("timm", "vit_tiny_patch16_224")
    assert parse_backbone("timm:vit_tiny_patch16_224") == ("timm", "vit_tiny_patch16_224")
    assert parse_backbone("hf-hub:timm/vit_tiny_patch16_224") == ("timm", "hf-hub:timm/vit_tiny_patch16_224")
    with pytest.raises(PluginError, match="unknown backbone 'open_clp'.*did you mean open_clip.*valid backbones: module, open_clip, timm"):
        parse_backbone("open_clp:ViT-B-16")


def test_the_tower_honours_the_backbone_contract():
    model, mean, std = tiny()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 3)
    features = model.forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(model.get_classifier()(features), model(x))
    assert mean == tuple(open_clip.OPENAI_DATASET_MEAN) and std == tuple(open_clip.OPENAI_DATASET_STD)
    assert not any("transformer.resblocks" in name and "visual" not in name for name, _ in model.named_parameters())  # no text tower


@pytest.mark.parametrize("name", ["full", "linear_probe"])
def test_full_and_linear_probe_train_an_open_clip_tower(name):
    strategy = load_registry().get("strategy", name).factory()
    torch.manual_seed(0)
    adapted = strategy.adapt(tiny()[0])
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable == ({"head.weight", "head.bias"} if name == "linear_probe" else {n for n, _ in adapted.named_parameters()})
    before = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    optimizer = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(adapted(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable and "head.weight" in changed and (name == "linear_probe" or "visual.conv1.weight" in changed)


def test_vpt_refuses_an_open_clip_tower_in_one_line():
    with pytest.raises(PluginError) as info:
        load_registry().get("strategy", "vpt_deep").factory().adapt(tiny()[0])
    assert "\n" not in str(info.value) and "VisionTransformer" in str(info.value)


def test_local_weights_load_into_the_tower(tmp_path):
    torch.manual_seed(1)
    source = open_clip.create_model(TINY)
    torch.save(source.state_dict(), tmp_path / "tiny.pt")
    model, _, _ = create_backbone(BackboneSpec(TINY, 32, weights=tmp_path / "tiny.pt", provider="open_clip"), 3)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.forward_features(x), source.visual(x))


def test_names_it_cannot_build_are_one_line():
    with pytest.raises(RobenchError, match="unknown open_clip model 'ViT-Q-16'"):
        create_backbone(BackboneSpec("ViT-Q-16", 32, provider="open_clip"), 3)
    with pytest.raises(RobenchError, match=r"names no weights: write open_clip:ViT-B-16@TAG \(tags: .*openai"):
        create_backbone(BackboneSpec("ViT-B-16", 224, provider="open_clip"), 3)
    with pytest.raises(RobenchError, match="has no weights 'nope'"):
        create_backbone(BackboneSpec("ViT-B-16@nope", 224, provider="open_clip"), 3)


def test_a_run_on_an_open_clip_backbone_end_to_end(tmp_path, capsys):
    code = main(["run", "--dataset", "synthetic", "--backbone", f"open_clip:{TINY}", "--strategies", "full,linear_probe",
                 "--attacks", "fgsm", "--eps", "0.01", "--seeds", "0", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(tmp_path / "run")
    assert {row["status"] for row in rows} == {"ok"} and len(rows) == 6  # clean, fgsm, escalation per model
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"]["name"] == f"open_clip:{TINY}" and config["backbone"]["image_size"] == 32
    assert config["comparable"]["plugins"]["backbone open_clip"].startswith("robench ")


def test_lora_names_the_towers_layers_and_adapts_those_named():
    lora = load_registry().get("strategy", "lora").factory
    with pytest.raises(PluginError, match="has no attention projections to adapt by default.*c_fc, c_proj, out_proj"):
        lora().adapt(tiny()[0])
    adapted = lora(targets=("c_fc", "c_proj")).adapt(tiny()[0])
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "head" in n for n in trainable)
    assert adapted(torch.rand(2, 3, 32, 32)).shape == (2, 3)
