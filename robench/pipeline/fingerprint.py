"""One fingerprint of a run's settings, from which both checks that protect a run are cut.

``run_settings``: what must be equal for two commands to write rows into one run folder
(config.json's ``comparable``; robench.pipeline.resume refuses a mismatch in one line). ``model_key``:
the part of it one trained model depends on, plus the model's own strategy, recipe, defense,
seed and training images; a checkpoint loads only into a model of the same key. Both name each
plugin's distribution and version, so upgrading a plugin retrains its models and refuses to mix
its new rows with old ones instead of reusing them silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from robench.pipeline.checkpoints import weights_sha256
from robench.pipeline.registry import load_registry

FORMAT = "2"  # checkpoint keys: 2 added plugin versions and the backbone provider

# What a model's trained weights depend on among the run's settings.
TRAINING = ("dataset", "split_fingerprint", "backbone", "weights", "image_size")


def run_settings(plan, prepared) -> dict:
    """The settings of a run (its settled ``plan``) that decide whether its rows can sit beside another run's."""
    config, strategies, attacks = plan.config, plan.strategies, plan.attacks
    backbone = config.backbone
    return {
        "dataset": config.dataset,
        "subset": config.subset,
        "n_images": len(prepared.images),
        "split_seed": prepared.split.seed,
        "split_fingerprint": prepared.split.fingerprint,
        "test_set": config.test_set,
        "test_images": _digest("\n".join(sorted(prepared.test_ids())))[:12],
        "attack_samples": config.attack_samples,
        "train_precision": config.train_precision,
        "attack_precision": config.attack_precision,
        "backbone": backbone.label,
        "weights": weights_sha256(Path(backbone.weights)) if backbone.weights else backbone.describe_weights(),
        "image_size": backbone.image_size,
        "recipes": {s.label: asdict(s.recipe) for s in strategies},
        # a transfer attack's surrogate trains too: its plugin's version is in its key
        "plugins": plugin_versions(config, [*strategies, *plan.surrogates.values()], attacks, prepared.dataset),
    }


def plugin_versions(config, strategies, attacks, dataset) -> dict[str, str]:
    """``{"strategy full": "robench 0.1.0", ...}``: the distribution and version of every plugin a run uses."""
    registry = load_registry()
    used = {("dataset", dataset.name), ("backbone", config.backbone.provider)}
    used |= {("strategy", s.plugin.name) for s in strategies}
    used |= {("defense", s.defense.plugin.name) for s in strategies if s.defense is not None}
    used |= {("attack", a.plugin.name) for a in attacks}
    found = (registry.get(kind, name) for kind, name in sorted(used))
    return {f"{plugin.kind} {plugin.name}": f"{plugin.package} {plugin.version}" for plugin in found}


def model_key(settings: dict, strategy, seed: int, prepared) -> dict:
    """Everything the trained weights of one model depend on, as plain JSON values."""
    images, split, defense = prepared.images, prepared.split, strategy.defense
    plugins = settings["plugins"]
    return {field: settings[field] for field in TRAINING} | {
        "format": FORMAT,
        "strategy": strategy.label,
        "plugin": f"{type(strategy.plugin).__module__}.{type(strategy.plugin).__qualname__}",
        "plugin_version": plugins[f"strategy {strategy.plugin.name}"],
        "dataset_version": plugins[f"dataset {prepared.dataset.name}"],
        "backbone_version": plugins[next(k for k in plugins if k.startswith("backbone "))],
        "recipe": settings["recipes"][strategy.label],
        "train_data": ids_digest(images, split.train),
        "val_data": ids_digest(images, split.val),
        "seed": seed,
    } | ({"defense": defense.label, "defense_plugin": f"{type(defense.plugin).__module__}.{type(defense.plugin).__qualname__}",
          "defense_version": plugins[f"defense {defense.plugin.name}"]} if defense is not None else {})


def ids_digest(images, indices) -> str:
    """Short hash of the image ids and labels a model trains (or selects) on, in order."""
    return _digest("\n".join(f"{images.ids[i]}\t{int(images.labels[i])}" for i in indices))[:16]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
