"""Frozen features on disk: later seeds and runs skip the backbone, and train the same head."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from robench.pipeline import features
from robench.pipeline.models import Normalized
from robench.pipeline.train import train
from robench_plugins.strategies.linear_probe import LinearProbe

CHECKPOINT_KEY = {"format": "1", "strategy": "linear_probe", "plugin": "p.LinearProbe", "recipe": {"batch_size": 8, "lr": 0.1},
                  "backbone": "robench_vit_micro", "weights": "abc", "image_size": 32, "dataset": "synthetic",
                  "split_fingerprint": "f", "train_data": "t", "val_data": "v", "seed": 0}
KEY = features.key(CHECKPOINT_KEY, frozen="d1", precision="fp32", device=torch.device("cpu"))


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8), torch.arange(n) % 7


def _probe(vit, mean, std, seed, store=None):
    """Train a linear probe; return its head and how many images went through the backbone."""
    model = Normalized(LinearProbe().adapt(copy.deepcopy(vit)), mean, std)
    seen = []
    model.model.blocks[0].register_forward_hook(lambda module, args, out: seen.append(len(out)))
    recipe = LinearProbe.recipe.override(epochs=3, batch_size=8)
    train(model, LinearProbe(), recipe, _data(24, 1), _data(10, 2), 7, seed, torch.device("cpu"), features=store)
    return model.model.head.state_dict(), sum(seen)


def test_a_later_seed_finds_the_features_on_disk_and_trains_the_same_head(micro_vit, tmp_path):
    vit, mean, std = micro_vit
    store = features.stored(tmp_path / "f.safetensors", KEY)
    _, first_pass = _probe(vit, mean, std, seed=0, store=store)
    head, second_pass = _probe(vit, mean, std, seed=1, store=store)
    reference, reference_pass = _probe(vit, mean, std, seed=1)
    assert first_pass == reference_pass == 24 + 10 and second_pass == 0
    for name in reference:
        assert torch.equal(head[name], reference[name]), name


def _computed(calls):
    def compute():
        calls.append(1)
        return {"train": torch.arange(6.0).view(3, 2), "val": torch.ones(2, 2)}
    return compute


def test_features_are_written_once_and_read_back_equal(tmp_path):
    path, calls = tmp_path / "features" / "f.safetensors", []
    first = features.stored(path, KEY)(_computed(calls))
    again = features.stored(path, KEY)(_computed(calls))
    assert calls == [1] and path.is_file() and not list(path.parent.glob(".*partial"))
    assert all(torch.equal(first[part], again[part]) for part in features.PARTS)


@pytest.mark.parametrize("spoil", ["other key", "corrupt", "missing part", "metadata not JSON", "edited values"])
def test_features_that_do_not_fit_are_computed_again(tmp_path, spoil):
    from robench.pipeline.checkpoints import write_tensors

    path, calls = tmp_path / "f.safetensors", []
    if spoil == "other key":
        features.stored(path, KEY | {"weights": "other"})(_computed([]))
    elif spoil == "corrupt":
        path.write_bytes(b"\x00" * 40)
    elif spoil == "missing part":
        write_tensors(path, {"train": torch.ones(1)}, {"robench_features": features.FORMAT, "key": json.dumps(KEY, sort_keys=True)})
    elif spoil == "metadata not JSON":
        write_tensors(path, {"train": torch.ones(1), "val": torch.ones(1)}, {"robench_features": features.FORMAT, "key": "{not json"})
    else:  # the right key and shapes, other numbers: only the checksum tells
        features.stored(path, KEY)(_computed([]))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
        write_tensors(path, {"train": torch.zeros(3, 2), "val": torch.ones(2, 2)}, metadata)
    out = features.stored(path, KEY)(_computed(calls))
    assert calls == [1] and torch.equal(out["val"], torch.ones(2, 2)) and torch.equal(out["train"], torch.arange(6.0).view(3, 2))
    assert features.stored(path, KEY)(_computed(calls)) and calls == [1]  # rewritten, so now it fits


def test_the_key_leaves_out_the_recipe_and_the_seed_but_not_the_frozen_weights():
    cpu = torch.device("cpu")
    other_seed = CHECKPOINT_KEY | {"seed": 1, "recipe": {"batch_size": 8, "lr": 0.5}}
    assert features.key(other_seed, "d1", "fp32", cpu) == KEY
    assert features.key(CHECKPOINT_KEY, "d2", "fp32", cpu) != KEY
    for changed in (CHECKPOINT_KEY | {"recipe": {"batch_size": 16}}, CHECKPOINT_KEY | {"weights": "x"}, CHECKPOINT_KEY | {"train_data": "y"}):
        assert features.key(changed, "d1", "fp32", cpu) != KEY
    assert features.key(CHECKPOINT_KEY, "d1", "bf16", cpu) != KEY
    assert features.path_for("out", KEY).parent.name == "features"


def test_the_frozen_digest_follows_the_frozen_weights_and_ignores_what_trains(micro_vit):
    vit, _, _ = micro_vit
    probe = LinearProbe().adapt(copy.deepcopy(vit))
    digest = features.frozen_digest(probe)
    assert features.frozen_digest(LinearProbe().adapt(copy.deepcopy(vit))) == digest
    with torch.no_grad():
        probe.head.weight.add_(1.0)  # trains: not part of the digest
        assert features.frozen_digest(probe) == digest
        probe.blocks[0].mlp.fc1.weight[0, 0] += 1e-3  # frozen: a different forward pass
    assert features.frozen_digest(probe) != digest


def test_a_run_over_three_seeds_computes_the_features_once_and_a_random_backbone_once_per_seed(tmp_path, monkeypatch):
    from robench.cli import main
    from robench.pipeline import train as training
    from tests.test_cli import FAST, _micro_weights

    passes = []
    original = training.frozen_features
    monkeypatch.setattr(training, "frozen_features", lambda *args: passes.append(1) or original(*args))
    weights = _micro_weights(tmp_path / "micro.safetensors")
    common = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--escalation", "off", "--seeds", "0,1,2",
              "--leaderboard-dir", str(tmp_path)]
    assert main([*common, "--weights", str(weights), "--out", str(tmp_path / "pretrained")]) == 0
    assert len(passes) == 2  # train and val, once for the three seeds
    assert main([*common, "--out", str(tmp_path / "random")]) == 0  # a random backbone per seed
    assert len(passes) == 2 + 3 * 2
    assert len(list((tmp_path / "pretrained" / "features").glob("linear_probe-*.safetensors"))) == 1
    assert len(list((tmp_path / "random" / "features").glob("linear_probe-*.safetensors"))) == 3
