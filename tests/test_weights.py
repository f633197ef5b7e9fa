"""Weights you cannot get wrong: a file of another model is refused with the right --backbone, a
size mismatch names the model the tensors fit, a file that is no weights says what it is, the hub
without network fails at once, and a failed run leaves no empty run folder."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from safetensors.torch import save_file

from robench.errors import RobenchError
from robench.pipeline.models import BackboneSpec, check_backbone, create_backbone
from robench_plugins.backbones.timm import MICRO
from robench_plugins.backbones.timm.weights import fitting_models, load_errors
from tests.conftest import shared_or_skip
from tests.test_cli import FAST, _micro_weights, run_cli


def _refusal(path, model=MICRO) -> str:
    with pytest.raises(RobenchError) as caught:
        check_backbone(BackboneSpec(model, 32, path))
    return str(caught.value)


def test_a_file_named_for_another_model_is_refused_with_the_right_backbone_and_no_run_folder(capsys, tmp_path):
    deit = _micro_weights(tmp_path / "deit_tiny_patch16_224.fb_in1k.safetensors")
    code, _, err = run_cli(capsys, "run", *FAST, "--weights", str(deit), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "are deit_tiny_patch16_224.fb_in1k's (its file name says so), not robench_vit_micro's" in err
    assert "pass --backbone deit_tiny_patch16_224 (its input mean/std" in err
    assert not (tmp_path / "r").exists()


def test_timms_old_file_names_and_metadata_name_the_model_too(tmp_path):
    old = _micro_weights(tmp_path / "deit_small_patch16_224-cd65a155.pth")
    assert "pass --backbone deit_small_patch16_224 " in _refusal(old)
    tagged = _micro_weights(tmp_path / "w.safetensors")
    state = {name: torch.zeros(1) for name in ("a", "b")}
    save_file(state, str(tagged), metadata={"architecture": "vit_small_patch16_224"})
    assert "(its safetensors metadata says so)" in _refusal(tagged)
    hub = tmp_path / "hub"
    hub.mkdir()
    _micro_weights(hub / "model.safetensors")
    (hub / "config.json").write_text(json.dumps({"architecture": "eva02_tiny_patch14_224", "num_classes": 1000}))
    assert "config.json beside it says so" in _refusal(hub / "model.safetensors")


def test_a_tag_whose_mean_and_std_differ_is_refused_and_one_whose_do_not_is_taken(tmp_path):
    clip_tag = _micro_weights(tmp_path / "convnext_base.clip_laion2b.safetensors")
    assert "whose input mean/std differ from convnext_base's: pass --backbone convnext_base.clip_laion2b" in _refusal(clip_tag, "convnext_base")
    check_backbone(BackboneSpec("vit_tiny_patch16_224", 32, _micro_weights(tmp_path / "vit_tiny_patch16_224.augreg_in21k.safetensors")))
    check_backbone(BackboneSpec("vit_base_patch16_224", 32, _micro_weights(tmp_path / "vit_base_patch16_224_in21k-e5005f0a.pth")))
    check_backbone(BackboneSpec(MICRO, 32, _micro_weights(tmp_path / "my-finetuned-vit.safetensors")))  # names no model


@pytest.mark.parametrize(("content", "said"), [
    (b"", "it is empty"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 22883376\n", "it is a Git LFS pointer"),
    (b"<!DOCTYPE html>\n<html><body>Sign in</body></html>", "it is an HTML page"),
    (gzip.compress(b"tensors", mtime=0), "it is an archive torch cannot read"),
    (b'{"a": 1}', "it is a text file beginning '{\"a\": 1}'"),
    (b"\x80\x02" + bytes(range(7, 200)), "it is a Python pickle that torch cannot load"),
    (bytes(range(3, 250)) * 4, "its 988 bytes are in no format robench knows"),
])
def test_a_file_that_is_no_weights_says_what_it_is(tmp_path, content, said):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(content)
    message = _refusal(path)
    assert message.startswith("weights weights.safetensors are not a weights file: ") and said in message


def test_a_size_mismatch_names_the_tensors_and_the_backbone_they_fit(tmp_path):
    tiny = tmp_path / "w.safetensors"
    save_file({"patch_embed.proj.weight": torch.zeros(192, 3, 16, 16),
               **{f"blocks.{i}.norm1.weight": torch.zeros(192) for i in range(12)}}, str(tiny))
    assert fitting_models(tiny, "vit_small_patch16_224") == (
        "the file holds a ViT of width 192, patch 16, 12 blocks (tiny): --backbone vit_tiny_patch16_224 fits it")
    assert fitting_models(tiny, "deit_base_patch16_224").endswith("--backbone deit_tiny_patch16_224 fits it")
    message = ('Error(s) in loading state_dict for VisionTransformer:\n\tMissing key(s) in state_dict: "head.weight", "head.bias". \n'
               "\tsize mismatch for cls_token: copying a param with shape torch.Size([1, 1, 192]) from checkpoint, the shape in "
               "current model is torch.Size([1, 1, 384]).\n\tsize mismatch for pos_embed: copying a param with shape "
               "torch.Size([1, 5, 192]) from checkpoint, the shape in current model is torch.Size([1, 5, 384]).")
    assert load_errors(message) == ("size mismatch for cls_token: [1, 1, 192] in the file, [1, 1, 384] in the model (and 1 more); "
                                    "2 keys missing from the file, e.g. head.weight")


def test_a_failed_run_removes_the_run_folder_it_made_but_not_one_it_found(capsys, tmp_path):
    wrong = _micro_weights(tmp_path / "wrong.safetensors", blocks__0__attn__qkv__weight=(10, 64))
    code, _, err = run_cli(capsys, "run", *FAST, "--weights", str(wrong), "--out", str(tmp_path / "new" / "run"))
    assert code == 2 and "size mismatch for blocks.0.attn.qkv.weight: [10, 64] in the file, [192, 64] in the model" in err
    assert not (tmp_path / "new").exists()  # nor the folder made to hold it
    (tmp_path / "mine").mkdir()
    assert run_cli(capsys, "run", *FAST, "--weights", str(wrong), "--out", str(tmp_path / "mine"))[0] == 2
    assert (tmp_path / "mine").is_dir()


def test_without_network_the_hub_fails_at_once_in_one_line(tmp_path, monkeypatch):
    import urllib.request

    from huggingface_hub import constants

    from robench import weights

    def unreachable(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    monkeypatch.setenv("HF_HUB_OFFLINE", "")
    weights.hub_reachable.cache_clear()
    try:
        with pytest.raises(RobenchError, match="cannot get the pretrained weights of vit_tiny_patch16_224: .* cannot be "
                                               "reached .* pass a local weights file with --weights FILE"):
            create_backbone(BackboneSpec("vit_tiny_patch16_224", 32, pretrained=True), 7)
        assert constants.HF_HUB_OFFLINE  # so huggingface_hub read its cache instead of retrying for a minute
    finally:
        weights.hub_reachable.cache_clear()


@pytest.mark.integration  # ../shared's weights
def test_the_real_deit_weights_need_deits_name_and_get_imagenet_statistics():
    deit = shared_or_skip("weights", "deit_tiny_patch16_224.fb_in1k.safetensors")
    assert "pass --backbone deit_tiny_patch16_224" in _refusal(deit, "vit_tiny_patch16_224")
    _, mean, std = create_backbone(BackboneSpec("deit_tiny_patch16_224", 32, deit), 7)
    assert mean == pytest.approx((0.485, 0.456, 0.406)) and std == pytest.approx((0.229, 0.224, 0.225))
