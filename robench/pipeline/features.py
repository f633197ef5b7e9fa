"""Frozen-backbone features kept on disk, so a head-only strategy pays for one backbone pass per
data set, not one per seed or per run.

When only the head trains and nothing is augmented (robench.pipeline.train), the head trains on the
frozen backbone's features. Those features do not depend on the seed when the backbone's
weights are pretrained, so a grid of 3 seeds, or a later run that adds a seed, loads them instead
of recomputing them: the first seed pays a pass over the data, the others train a linear layer.

Files live in ``<out>/features/``, beside the checkpoints and with the same rules: named by a hash
of everything the features depend on (the strategy and its options, whose ``adapt`` may change the
frozen forward pass; backbone, weights' sha256, a digest of the adapted model's frozen tensors,
image size, the images of the split, batch size, precision, device type), written atomically with
safetensors and a checksum of the features in its header, never unpickled, and ignored
(recomputed, in one line) when they do not fit or do not match their checksum. Training options in
the strategy's label (``linear_probe:lr=0.01``) make a separate file: safe, if not shared.

A seed that reads its features trains without a backbone pass, so its ``train_seconds`` is the
head's alone; the seed that computed them paid for the pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from robench.core.progress import say
from robench.pipeline import checkpoints

FOLDER = "features"
FORMAT = "2"  # bump when what a features file holds changes (2: a checksum)
PARTS = ("train", "val")


def key(checkpoint_key: dict, frozen: str, precision: str, device: torch.device) -> dict:
    """What a model's frozen features depend on: its checkpoint key without what only training
    reads (the optimisation recipe and the seed), plus ``frozen``, the digest of the adapted
    model's frozen weights (robench.pipeline.features.frozen_digest). The digest, not the seed, tells a
    randomly initialised backbone, or a strategy that draws frozen values, from another seed's."""
    fields = {name: value for name, value in checkpoint_key.items() if name not in ("format", "recipe", "seed")}
    return fields | {"format": FORMAT, "frozen": frozen, "batch_size": checkpoint_key["recipe"]["batch_size"],
                     "precision": precision, "device": torch.device(device).type}


def frozen_digest(adapted: torch.nn.Module) -> str:
    """A hash of every tensor of ``adapted`` that does not train (frozen parameters and buffers):
    equal digests, equal frozen forward passes. About a second for ViT-B/16's 86M weights."""
    digest = hashlib.sha256()
    for name, tensor in adapted.state_dict(keep_vars=True).items():
        if not (isinstance(tensor, torch.nn.Parameter) and tensor.requires_grad):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def path_for(out: Path, key_fields: dict) -> Path:
    """``<out>/features/<strategy>-<hash>.safetensors``."""
    return Path(out) / FOLDER / f"{checkpoints.file_stem(key_fields['strategy'])}-{checkpoints.digest(key_fields)}.safetensors"


Features = Callable[[Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]  # the ``features`` argument of train()


def in_run_folder(out: Path, checkpoint_key: dict, adapted: torch.nn.Module, precision: str, device: torch.device) -> Features:
    """A ``features`` argument for robench.pipeline.train.train that keeps them in ``<out>/features/``.

    The key, which hashes the frozen weights, is made only when train() asks for features, so a
    strategy that trains through the backbone pays nothing for it.
    """

    def load_or_compute(compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        fields = key(checkpoint_key, frozen_digest(adapted), precision, device)
        return stored(path_for(out, fields), fields)(compute)

    return load_or_compute


def stored(path: Path, key_fields: dict) -> Features:
    """A ``features`` argument for robench.pipeline.train.train: the features in ``path`` when it holds
    those of ``key_fields``, else computed, written there and returned."""

    def load_or_compute(compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        loaded = _load(path, key_fields)
        if loaded is not None:
            return loaded
        features = compute()
        try:
            checkpoints.write_tensors(path, features, {"robench_features": FORMAT, "key": json.dumps(key_fields, sort_keys=True),
                                                       "sha256": checksum(features)})
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
        fits = (metadata.get("robench_features") == FORMAT and json.loads(metadata.get("key", "{}")) == key_fields
                and set(tensors) == set(PARTS))
    except (SafetensorError, OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        say(f"features {path} not used: unreadable ({type(exc).__name__}); computing them again")
        return None
    if not fits:
        say(f"features {path} not used: written for another backbone or data; computing them again")
        return None
    if metadata.get("sha256") != checksum(tensors):
        say(f"features {path} not used: they do not match their checksum (damaged or edited); computing them again")
        return None
    return tensors


def checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the parts' names, shapes and bytes, so that edited features are never trained on."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]
