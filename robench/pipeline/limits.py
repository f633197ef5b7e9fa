"""The ranges a run's numbers must lie in, checked before anything is decoded or trained.

Out of range, numpy and torch fail deep inside (``Seed must be between 0 and 2**32 - 1``), or do
something worse: ``--split-seed -1`` used to end in a wrong message about class sizes, and
``--image-size 100000`` tried to allocate terabytes. Each is refused here in one line saying
the range.
"""

from __future__ import annotations

import os

import psutil
import torch

from robench.backbone import BackboneSpec
from robench.errors import RobenchError
from robench.pipeline.models import provider

SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit
MAX_EPOCHS = 10_000
MAX_SEEDS = 1_000  # models per strategy: a TOML list of 200,000 seeds was accepted


def check_numbers(config) -> None:
    """The seeds, the split seed, the epochs override, the image size and the threads of a RunConfig."""
    _within(config.split_seed, 0, SEED_MAX, "--split-seed")
    for seed in config.seeds:
        _within(seed, 0, SEED_MAX, "--seeds")
    if len(config.seeds) > MAX_SEEDS:
        raise RobenchError(f"--seeds lists {len(config.seeds):,} seeds, more than {MAX_SEEDS:,} models per strategy: "
                           "list fewer (3 to 5 give the seed spread)")

    if (epochs := (config.recipe_overrides or {}).get("epochs")) is not None:
        _within(epochs, 1, MAX_EPOCHS, "--epochs")
    _within(config.backbone.image_size, 1, None, "--image-size")
    if getattr(config, "threads", None) is not None:  # torch crashed (a segfault) at --threads 100000
        _within(config.threads, 1, os.cpu_count() or 1, "--threads")


def check_image_size(spec: BackboneSpec, device: torch.device) -> None:
    """``spec.image_size`` against the backbone's patch size and against what the device can hold.

    The backbone is built on the meta device (shapes, no memory, a fraction of a second), so its
    patch size and its parameters at this image size (a ViT's position embedding grows with it)
    are known before any data is decoded. Refused only where even the weights and one image would
    not fit: a lower bound of what training needs, never a guess that turns a working run away.
    """
    try:
        with torch.device("meta"):
            model, _, _ = provider(spec).create(spec.name, num_classes=2, image_size=spec.image_size, weights=None,
                                                pretrained=False)
    except Exception:  # noqa: BLE001  (a provider that cannot build on meta: the run's own build reports it)
        return
    size, patch = spec.image_size, _patch_size(model)
    if patch and size < patch:
        raise RobenchError(f"--image-size {size} is smaller than {spec.label}'s patch size {patch}: use at least {patch}")
    if patch and size % patch:
        lower = size - size % patch
        raise RobenchError(f"--image-size {size} is not a multiple of {spec.label}'s patch size {patch}: the last "
                           f"{size % patch} pixel rows and columns would never reach the model; use {lower or patch} or {lower + patch}")
    tokens = (size // patch) ** 2 if patch else 0
    needed = 4 * (sum(p.numel() for p in model.parameters()) + 3 * size**2 + tokens * getattr(model, "embed_dim", 1))
    available = _memory(device)
    if needed > available:
        default = provider(spec).default_image_size(spec.name)
        raise RobenchError(f"--image-size {size}: {spec.label} needs at least {needed / 2**30:,.0f} GiB for its weights and "
                           f"one image, more than the {available / 2**30:,.0f} GiB of {device}: use a smaller --image-size, "
                           f"e.g. its own {default}")


def check_recipe(recipe, label: str) -> None:
    """A strategy's recipe after its own overrides (``linear_probe:epochs=100000``): the flags' bounds."""
    _within(recipe.epochs, 1, MAX_EPOCHS, f"{label}: epochs")


def _within(value, low: int, high: int | None, flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = f" to {high:,}" if high is not None else " or more"
        raise RobenchError(f"{flag} {value!r} is out of range: use a whole number from {low}{upper}")


def _patch_size(model: torch.nn.Module) -> int | None:
    """The side of a ViT's patches (timm's ``patch_embed.patch_size``, open_clip's ``patch_size``); None for a CNN."""
    for module in model.modules():
        found = getattr(module, "patch_size", None)
        if isinstance(found, int) or (isinstance(found, tuple) and found and isinstance(found[0], int)):
            return found if isinstance(found, int) else found[0]
    return None


def _memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return psutil.virtual_memory().total
