"""Frozen-backbone features kept on disk, so a head-only strategy pays for one backbone pass per
data set, not one per seed or per run.

When only the head trains and nothing is augmented (robench.train), the head trains on the
frozen backbone's features. Those features do not depend on the seed when the backbone's
weights are pretrained, so a grid of 3 seeds, or a later run that adds a seed, loads them instead
of recomputing them: the first seed pays a pass over the data, the others train a linear layer.

Files live in ``<out>/features/``, beside the checkpoints and with the same rules: named by a hash
of everything the features depend on (the strategy, whose ``adapt`` may change the frozen forward
pass; backbone, weights' sha256, image size, the images of the split, batch size, precision,
device type; the seed too when the backbone is randomly initialised), written atomically with
safetensors, never unpickled, and ignored (recomputed) when they do not fit.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from robench import checkpoints
from robench.progress import say

FOLDER = "features"
FORMAT = "1"  # bump when what a features file holds changes
PARTS = ("train", "val")


def key(checkpoint_key: dict, pretrained: bool, precision: str, device: torch.device) -> dict:
    """What a model's frozen features depend on: its checkpoint key without what only training
    reads (the optimisation recipe, and the seed when the weights are pretrained)."""
    fields = {name: value for name, value in checkpoint_key.items() if name not in ("format", "recipe", "seed")}
    fields |= {"format": FORMAT, "batch_size": checkpoint_key["recipe"]["batch_size"], "precision": precision,
               "device": torch.device(device).type}
    return fields if pretrained else fields | {"seed": checkpoint_key["seed"]}


def path_for(out: Path, key_fields: dict) -> Path:
    """``<out>/features/<strategy>-<hash>.safetensors``."""
    return Path(out) / FOLDER / f"{checkpoints.file_stem(key_fields['strategy'])}-{checkpoints.digest(key_fields)}.safetensors"


def stored(path: Path | None, key_fields: dict) -> Callable[[Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
    """A ``features`` argument for robench.train.train: the features in ``path`` when it holds
    those of ``key_fields``, else computed, written there and returned."""

    def load_or_compute(compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        loaded = _load(path, key_fields) if path is not None else None
        if loaded is not None:
            return loaded
        features = compute()
        if path is not None:
            try:
                checkpoints.write_tensors(path, features, {"robench_features": FORMAT, "key": json.dumps(key_fields, sort_keys=True)})
            except OSError as exc:
                say(f"features {path} not saved ({exc.strerror or exc}): the next seed computes them again")
        return features

    return load_or_compute


def _load(path: Path, key_fields: dict) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        say(f"features {path} not used: unreadable ({type(exc).__name__}); computing them again")
        return None
    if metadata.get("robench_features") != FORMAT or json.loads(metadata.get("key", "{}")) != key_fields or set(tensors) != set(PARTS):
        say(f"features {path} not used: written for another backbone or data; computing them again")
        return None
    return tensors
