"""A transfer attack's examples: crafted once per (attack, seed) on every attacked image, on the
surrogate alone, and shared by every model of the run.

Why a file in the run folder and not a value in memory: the models of a grid are separate cells
(one after another, or Ray tasks on other machines), and the examples must be the same for all of
them, whatever model asks first. The first cell that needs them builds the surrogate (a checkpoint
like any model's), crafts, and writes ``transfer/<attack>-seed<k>-<hash>.safetensors``; the others
read it, so a transfer cell over N models costs one PGD on the surrogate plus N forward passes
(``python bench/transfer_cost.py``). A file lock keeps two processes of one machine from crafting
twice. The key holds everything the examples depend on, the surrogate's own checkpoint key
included, and nothing of the target's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from robench.attack import PRETRAINED, TransferAttack, check_perturbation, exact_arithmetic, frozen
from robench.pipeline import checkpoints
from robench.pipeline.fingerprint import model_key
from robench.pipeline.prepare import attacked_images
from robench.pipeline.train import to_pixels

FOLDER = "transfer"


def row_fields(plan, attack, strategy) -> dict:
    """A transfer attack's surrogate, in its rows (``pretrained`` or a strategy label); nothing for
    another attack. Crafted on the model itself it is a white-box PGD, not a black-box attack: the
    matrix's diagonal, and ``source=pretrained`` on the run's own linear probe (the same checkpoint)."""
    surrogate = plan.surrogates.get(attack.label)
    if surrogate is None:
        return {}
    source = attack.plugin.source if attack.plugin.source == PRETRAINED else surrogate.label
    return {"attack_source": source, "attack_black_box": surrogate.label != strategy.label}


def examples_for(plan, attack, seed: int, prepared, settings: dict, images: torch.Tensor, labels: torch.Tensor,
                 train: Callable[[object], nn.Module], reseed: Callable[[], None]) -> dict[float, torch.Tensor]:
    """A transfer attack's examples for seed ``seed`` in a run: read where another cell made them, else
    crafted on the attack's surrogate, which ``train(strategy)`` trains or loads from its checkpoint.
    Nothing of the model being evaluated enters them or their key."""
    config, source = plan.config, plan.surrogates[attack.label]
    source_settings = settings | {"recipes": settings["recipes"] | {source.label: asdict(source.recipe)}}
    key = {"attack": attack.label, "attack_version": settings["plugins"][f"attack {attack.plugin.name}"],
           "source": model_key(source_settings, source, seed, prepared), "eps": list(config.eps),
           "images": checkpoints.digest(attacked_images(prepared))}
    return examples(examples_path(config.out, attack.label, seed, key), key, attack.plugin, lambda: train(source),
                    images, labels, list(config.eps), config.attack_batch_size, plan.device, reseed)


def examples_path(out: Path, attack_label: str, seed: int, key: dict) -> Path:
    """``<out>/transfer/<attack>-seed<seed>-<hash of key>.safetensors``."""
    return Path(out) / FOLDER / f"{checkpoints.file_stem(attack_label)}-seed{seed}-{checkpoints.digest(key)}.safetensors"


def examples(path: Path, key: dict, attack: TransferAttack, surrogate: Callable[[], nn.Module], images: torch.Tensor,
             labels: torch.Tensor, eps_values: list[float], batch_size: int, device, reseed: Callable[[], None]
             ) -> dict[float, torch.Tensor]:
    """Each eps's adversarial images (float32, on the CPU, in the order of ``images``): read from
    ``path`` where an earlier cell wrote them for the same ``key``, else crafted on ``surrogate()``
    (called only then) after ``reseed()``, checked against the threat model, and written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        found = _read(path, key, eps_values)
        if found is not None:
            return found
        model = surrogate()
        reseed()
        crafted = {eps: [] for eps in eps_values}
        with frozen(model), exact_arithmetic():
            for start in range(0, len(images), batch_size):
                x = to_pixels(images[start : start + batch_size].to(device))
                y = labels[start : start + batch_size].to(device)
                for eps, adv in attack.craft(model, x, y, eps_values):
                    check_perturbation(f"attack {attack.name}", attack.norm, adv, x, eps)
                    crafted[eps].append(adv.detach().float().cpu())
        shape = (0, *images.shape[1:])
        made = {eps: torch.cat(parts) if parts else torch.empty(shape) for eps, parts in crafted.items()}
        checkpoints.write_tensors(path, {_name(eps): t for eps, t in made.items()}, {"key": _text(key)})
        return made


def _read(path: Path, key: dict, eps_values: list[float]) -> dict[float, torch.Tensor] | None:
    """The examples at ``path`` if they were made for ``key`` and hold every eps; else None."""
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as stored:
        if (stored.metadata() or {}).get("key") != _text(key):
            return None
    tensors = load_file(str(path))
    if not all(_name(eps) in tensors for eps in eps_values):
        return None
    return {eps: tensors[_name(eps)] for eps in eps_values}


def _name(eps: float) -> str:
    return f"eps={float(eps)!r}"


def _text(key: dict) -> str:
    return json.dumps(key, sort_keys=True)
