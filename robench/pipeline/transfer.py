"""A transfer attack's examples: crafted once per (attack, seed, eps) on every attacked image, on the
surrogate alone, and shared by every model of the run.

Why a file in the run folder and not a value in memory: the models of a grid are separate cells
(one after another, or Ray tasks on other machines), and the examples must be the same for all of
them, whatever model asks first. The first cell that needs them builds the surrogate (a checkpoint
like any model's), crafts, and publishes ``transfer/<attack>-seed<k>-eps<e>-<hash>.safetensors``;
the others read it, so a transfer cell over N models costs one PGD on the surrogate plus N forward
passes (``python bench/transfer_cost.py``). Each eps is a file of its own, its random starts drawn
from (seed, eps) alone, so a resumed run that adds an eps leaves the others' examples as they were.
A file is published without replacing one already there (a hard link, which fails if the name is
taken) and every cell, the crafting one included, answers the file's contents: where two cells
crafted at once (two Ray nodes, which a file lock on a shared filesystem may not keep apart), the
first published is the one every model sees. The key names the attack, its version, the seed, the
eps, the attacked images and the surrogate's own checkpoint key, and nothing of any target.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from robench.attack import PRETRAINED, TransferAttack, check_perturbation, exact_arithmetic, frozen
from robench.pipeline import checkpoints
from robench.pipeline.fingerprint import model_key
from robench.pipeline.prepare import attacked_images
from robench.pipeline.train import to_pixels

FOLDER = "transfer"
TENSOR = "examples"


def row_fields(plan, attack, strategy) -> dict:
    """A transfer attack's surrogate, in its rows (``pretrained`` or a strategy label); nothing for
    another attack. Crafted on the model itself it is a white-box PGD, not a black-box attack: the
    matrix's diagonal, and ``source=pretrained`` on the run's own linear probe (the same checkpoint)."""
    surrogate = plan.surrogates.get(attack.label)
    if surrogate is None:
        return {}
    source = attack.plugin.source if attack.plugin.source == PRETRAINED else surrogate.label
    return {"attack_source": source, "attack_black_box": not same_model(surrogate, strategy)}


def same_model(a, b) -> bool:
    """Whether two planned strategies train the same weights: label, recipe and defense alike."""
    return a.label == b.label and a.recipe == b.recipe and (a.defense is None) == (b.defense is None) and (
        a.defense is None or a.defense.label == b.defense.label)


def examples_for(plan, attack, seed: int, prepared, settings: dict, images: torch.Tensor, labels: torch.Tensor,
                 train: Callable[[object], nn.Module], reseed: Callable[[int], None]) -> dict[float, torch.Tensor]:
    """A transfer attack's examples for seed ``seed`` at every eps of the run: read where another cell
    made them, else crafted on the attack's surrogate, which ``train(strategy)`` trains or loads from
    its checkpoint. Nothing of the model being evaluated enters them or their key."""
    config, source = plan.config, plan.surrogates[attack.label]
    source_settings = settings | {"recipes": settings["recipes"] | {source.label: asdict(source.recipe)}}
    key = {"attack": attack.label, "attack_version": settings["plugins"][f"attack {attack.plugin.name}"],
           "source": model_key(source_settings, source, seed, prepared), "seed": seed,
           "images": checkpoints.digest(attacked_images(prepared))}
    paths = {eps: examples_path(config.out, attack.label, seed, eps, key) for eps in config.eps}
    return examples(paths, key, attack.plugin, lambda: train(source), images, labels, config.attack_batch_size, plan.device,
                    reseed=lambda eps: reseed(eps_seed(seed, eps)))


def eps_seed(seed: int, eps: float) -> int:
    """The seed of one eps's random starts: from the run's seed and the eps alone."""
    return int.from_bytes(hashlib.sha256(f"{seed}\t{float(eps)!r}".encode()).digest()[:4], "little")


def examples_path(out: Path, attack_label: str, seed: int, eps: float, key: dict) -> Path:
    """``<out>/transfer/<attack>-seed<seed>-eps<eps>-<hash of key and eps>.safetensors``."""
    digest = checkpoints.digest(key | {"eps": float(eps)})
    return Path(out) / FOLDER / f"{checkpoints.file_stem(attack_label)}-seed{seed}-eps{float(eps)!r}-{digest}.safetensors"


def examples(paths: dict[float, Path], key: dict, attack: TransferAttack, surrogate: Callable[[], nn.Module],
             images: torch.Tensor, labels: torch.Tensor, batch_size: int, device,
             reseed: Callable[[float], None]) -> dict[float, torch.Tensor]:
    """Each eps's adversarial images (float32, on the CPU, in the order of ``images``), from the file at
    ``paths[eps]``: read where it exists, else crafted on ``surrogate()`` (called at most once) after
    ``reseed(eps)``, checked against the threat model, and published."""
    found, model = {}, None
    for eps, path in paths.items():
        eps_key = key | {"eps": float(eps)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # one machine's processes craft once; other machines: see _publish
            stored = _read(path, eps_key)
            if stored is None:
                model = model if model is not None else surrogate()
                reseed(eps)
                _publish(path, _craft(attack, model, images, labels, eps, batch_size, device), eps_key)
                stored = _read(path, eps_key)
        if stored is None:
            raise ValueError(f"transfer examples {path} were published for another key: remove the file to craft them again")
        found[eps] = stored
    return found


def _craft(attack: TransferAttack, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float,
           batch_size: int, device) -> torch.Tensor:
    parts = []
    with frozen(model), exact_arithmetic():
        for start in range(0, len(images), batch_size):
            x = to_pixels(images[start : start + batch_size].to(device))
            y = labels[start : start + batch_size].to(device)
            for at, adv in attack.craft(model, x, y, [eps]):
                check_perturbation(f"attack {attack.name}", attack.norm, adv, x, at)
                parts.append(adv.detach().float().cpu())
    return torch.cat(parts) if parts else torch.empty((0, *images.shape[1:]))


def _publish(path: Path, tensor: torch.Tensor, key: dict) -> None:
    """Write the examples beside ``path`` and give them its name unless another process did first."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file({TENSOR: tensor.contiguous()}, str(partial), metadata={"key": _text(key)})
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            pass  # published by another cell first: that one is read
    finally:
        partial.unlink(missing_ok=True)


def _read(path: Path, key: dict) -> torch.Tensor | None:
    """The examples at ``path`` if they were made for ``key``; else None."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as stored:
        if (stored.metadata() or {}).get("key") != _text(key):
            return None
    return load_file(str(path))[TENSOR]


def _text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)
