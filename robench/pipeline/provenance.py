"""config.json: what a reader needs to trust and re-make a run's leaderboard (the command,
versions, data, split, weights, precision and the attacked images)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

from robench.core import results
from robench.pipeline.checkpoints import weights_sha256
from robench.pipeline.escalation import FIRST_STEPS, RESTARTS
from robench.pipeline.prepare import Prepared, attacked_images, test_arrays


def split_kind(images) -> str:
    """How the test images were held out, in the page header's words: a folder dataset's split is per
    image, HAM10000's by lesion; a reader must not take the one for the other."""
    if images.assigned is not None and "test" in images.assigned:
        return "the dataset's own test part"
    if list(images.groups) == list(images.ids):
        return "per-image split of the dataset (each image its own group: images of one patient may sit on both sides)"
    return "lesion-grouped split of the dataset" if images.name == "ham10000" else "group-wise split of the dataset (no group on two sides)"


def describe(plan, prepared: Prepared, backbone_params: int) -> dict:
    """The config.json of a run (its settled ``plan``): what a reader needs to trust and re-make its leaderboard."""
    config = plan.config
    images, split, test = prepared.images, prepared.split, prepared.test
    weights = config.backbone.weights
    return {
        "robench_version": _version("robench"),
        "command": config.command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": config.name,
        "dataset": {"name": images.name, "spec": config.dataset, "description": images.description,
                    "n_images": len(images), "classes": list(images.classes), "malignant": prepared.positive,
                    "symmetries": prepared.dataset.symmetries},
        "split": {
            "seed": split.seed, "fingerprint": split.fingerprint,
            "n_train": len(split.train), "n_val": len(split.val),
            "n_test": len(split.test) if test is None else len(test),
            "test_set": test.description if test is not None else split_kind(images),
        },
        "backbone": {
            "name": config.backbone.label, "provider": config.backbone.provider, "weights": config.backbone.describe_weights(),
            "weights_sha256": weights_sha256(weights) if weights else None,  # hashed once per process: the fingerprint hashes it too
            "image_size": config.backbone.image_size, "params": backbone_params,
        },
        "seeds": config.seeds,
        "strategies": [s.label for s in config.strategies],
        "defenses": [d.label for d in config.defenses],
        "attacks": [a.label for a in config.attacks],
        "eps": config.eps,
        "corruptions": {"names": config.corruptions, "severities": config.severities,
                        "how": "MedMNIST-C's dermamnist corruptions of the attacked test images, seeded per image and seed "
                               "(robench/pipeline/corruptions.py)"} if config.corruptions else None,
        "escalation": None if config.escalation is None else {
            "rounds": config.escalation, "first_steps": FIRST_STEPS, "margin_restarts": RESTARTS,
            "how": "the images every L-inf attack left correct at an eps, attacked by PGD (margin, cross-entropy) and APGD-DLR "
                   "with steps doubling each round until a round fools nothing (robench/pipeline/escalation.py)"},
        "protocol": config.protocol,
        "reference": config.reference,
        "format": results.FORMAT,
        "attack_samples": None if prepared.attacked is None else {
            "n": len(prepared.attacked), "of": len(test_arrays(prepared)[1]), "seed": split.seed,
            "how": "class-stratified subset of the test set, the same for every strategy and seed"},
        "attacked": attacked_images(prepared),
        "versions": {name: _version(name) for name in ("robench", "torch", "timm", "torchattacks", "peft")}
        | {"python": platform.python_version()},
        "device": str(plan.device),
        "precision": {"train": config.train_precision, "attack": config.attack_precision},
        "execution": {"executor": config.executor, "ray_address": config.ray_address,
                      "ray_gpus_per_task": config.ray_gpus_per_task, "channels_last": config.channels_last,
                      "compile": config.compile, "threads": config.threads},
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
