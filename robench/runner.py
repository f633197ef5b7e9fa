"""Runs the grid: for each strategy and seed, train; then each attack at each eps; a row per cell.

Everything that can be checked is checked before the first model trains (names, options,
recipes, backbone and weights, data), so bad input costs seconds, not hours. A cell that fails
while running is recorded with its error and the run goes on.
"""

from __future__ import annotations

import platform
import random
import resource
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from robench import data, leaderboard, results
from robench.attack import Attack
from robench.backbone import BackboneSpec, Normalized, check_backbone, create_backbone, file_sha256
from robench.data.split import stratified_sample
from robench.errors import PluginError, RobenchError
from robench.evaluate import attack_sweep, clean_metrics, predict
from robench.metrics import accuracy, majority_accuracy
from robench.options import Spec, coerce, resolve
from robench.progress import say
from robench.registry import load_registry
from robench.strategy import RECIPE_FIELDS, Recipe, Strategy
from robench.train import train


@dataclass
class RunConfig:
    """Everything a run needs; the CLI builds it from flags, a notebook can build it directly."""

    dataset: str
    backbone: BackboneSpec
    strategies: list[Spec]
    attacks: list[Spec]
    eps: list[float]
    seeds: list[int]
    out: Path
    leaderboard_dir: Path
    name: str
    data_dir: Path | None = None
    subset: int | None = None
    split_seed: int = 0
    test_set: str = "split"  # "split" (held-out lesions) or "isic2018"
    test_dir: Path | None = None
    recipe_overrides: dict = field(default_factory=dict)  # global --lr / --epochs / --batch-size
    attack_batch_size: int = 64
    attack_samples: int | None = None  # attack a class-stratified subset of this many test images
    device: str = "auto"
    protocol: str = "all"
    command: str = ""


@dataclass
class Planned:
    """A strategy or attack resolved from its spec, ready to run."""

    label: str
    plugin: Strategy | Attack
    recipe: Recipe | None = None


@dataclass
class Prepared:
    """The data side of a run, decoded once and shared by every cell."""

    images: data.ImageSet
    split: data.Split
    test: data.ImageSet | None  # an external test set, or None for the split's test part
    attacked: np.ndarray | None = None  # indices into the test set that attacks run on; None: all


def run(config: RunConfig) -> tuple[Path, list[dict]]:
    """Run the whole grid; return the leaderboard path and the failed rows."""
    strategies, attacks = plan(config)
    device = resolve_device(config.device)
    num_classes = len(data.HAM10000_CLASSES)
    check_backbone(config.backbone)  # cheap checks before the data is decoded
    prepared = prepare_data(config)
    create_backbone(config.backbone, num_classes)  # weights that do not fit fail before any training
    majority = majority_accuracy(prepared.images.labels[prepared.split.train], _test_arrays(prepared)[1])
    make_out_dir(config.out)
    results.write_config(config.out, describe(config, prepared))

    failed = []
    for strategy in strategies:
        for seed in config.seeds:
            for row in run_model(config, strategy, attacks, seed, prepared, device, num_classes):
                row |= {"majority_acc": majority}
                results.append_row(config.out, row)
                if row["status"] != "ok":
                    failed.append(row)
            done = [r for r in results.read_rows(config.out) if r["strategy"] == strategy.label and r["seed"] == seed]
            say(_summary_line(strategy.label, seed, done))
    path = leaderboard.write(config.out, config.leaderboard_dir, config.name)
    return path, failed


def plan(config: RunConfig) -> tuple[list[Planned], list[Planned]]:
    """Resolve every spec into a plugin (and a strategy's recipe), failing on the first bad one."""
    registry = load_registry()
    for value in config.eps:
        if not 0 <= value <= 1:
            raise RobenchError(f"eps {value} is outside [0, 1]: eps is in pixel units, e.g. 0.01 or 2/255")
    strategies = []
    for spec in config.strategies:
        strategy, recipe_text = resolve(registry, "strategy", spec, reserved=RECIPE_FIELDS)
        changes = {k: coerce(v, RECIPE_FIELDS[k], f"{spec.text!r}: option {k}") for k, v in recipe_text.items()}
        try:
            recipe = strategy.recipe.override(**config.recipe_overrides).override(**changes)
        except ValueError as exc:
            raise PluginError(f"invalid recipe for {spec.text!r}: {exc}") from None
        strategies.append(Planned(spec.label, strategy, recipe))
    attacks = [Planned(spec.label, resolve(registry, "attack", spec)[0]) for spec in config.attacks]
    _refuse_duplicates([p.label for p in strategies], "strategy")
    _refuse_duplicates([p.label for p in attacks], "attack")
    return strategies, attacks


def run_model(config, strategy: Planned, attacks: list[Planned], seed: int, prepared: Prepared, device, num_classes):
    """Train one (strategy, seed) and yield its rows: a clean row, then one per attack and eps."""
    base = {"strategy": strategy.label, "strategy_name": strategy.plugin.name, "seed": seed}
    try:
        model, train_info = train_model(config, strategy, seed, prepared, device, num_classes)
        test_images, test_labels = _test_arrays(prepared)
        clean_preds = predict(model, test_images, config.attack_batch_size, device)
        base |= clean_metrics(test_labels, clean_preds) | train_info
        if prepared.attacked is not None:
            keep = torch.as_tensor(prepared.attacked)
            test_images, test_labels, clean_preds = test_images[keep], test_labels[keep], clean_preds[keep]
        base |= {"n_attacked": len(test_labels), "attack_clean_acc": accuracy(clean_preds == test_labels)}
    except Exception as exc:  # noqa: BLE001  (a failed cell is recorded, the run goes on)
        yield base | _failure(exc, attack="none", attack_name="none", eps=0.0)
        for attack in attacks:
            for eps in config.eps:
                yield base | _failure(exc, attack=attack.label, attack_name=attack.plugin.name, eps=eps)
        return
    yield base | {"attack": "none", "attack_name": "none", "eps": 0.0, "status": "ok", "error": None,
                  "robust_acc": base["clean_acc"], "robust_bacc": base["clean_bacc"]}
    for attack in attacks:
        cell = base | {"attack": attack.label, "attack_name": attack.plugin.name,
                       "attack_family": attack.plugin.family, "attack_black_box": attack.plugin.black_box}
        try:
            seed_everything(seed)
            metrics = attack_sweep(model, attack.plugin, config.eps, test_images, test_labels, clean_preds,
                                   config.attack_batch_size, device, label=f"{strategy.label} {attack.label}")
        except Exception as exc:  # noqa: BLE001
            for eps in config.eps:
                yield cell | _failure(exc, eps=eps)
            continue
        for eps in config.eps:
            yield cell | {"eps": eps, "status": "ok", "error": None} | metrics[eps]


def train_model(config, strategy: Planned, seed: int, prepared: Prepared, device, num_classes):
    """Build, adapt and train one model; return it ready for attacks, with its training facts."""
    seed_everything(seed)
    vit, mean, std = create_backbone(config.backbone, num_classes)
    backbone_params = sum(p.numel() for p in vit.parameters())
    adapted = strategy.plugin.adapt(vit)
    model = Normalized(adapted, mean, std).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    images, split = prepared.images, prepared.split
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = train(
        model, strategy.plugin, strategy.recipe,
        (images.images[split.train], images.labels[split.train]),
        (images.images[split.val], images.labels[split.val]),
        num_classes, seed, device, label=f"{strategy.label} seed {seed}",
    )
    final = Normalized(strategy.plugin.for_evaluation(adapted), mean, std).to(device).eval()
    final.requires_grad_(False)
    info = {
        "trainable_params": trainable,
        "backbone_params": backbone_params,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "seconds_per_epoch": result.seconds / result.epochs,
        "peak_mem_mb": _peak_memory_mb(device),
    }
    return final, info


def prepare_data(config: RunConfig) -> Prepared:
    size = config.backbone.image_size
    images = data.load(config.dataset, data_dir=config.data_dir, image_size=size, subset=config.subset)
    split = data.split(images, seed=config.split_seed)
    test = data.load_isic2018_test(config.test_dir, image_size=size) if config.test_set == "isic2018" else None
    prepared = Prepared(images, split, test)
    if config.attack_samples is not None and config.attack_samples < len(_test_arrays(prepared)[1]):
        # from the split alone, so every strategy and seed is attacked on the same images
        prepared.attacked = stratified_sample(_test_arrays(prepared)[1].numpy(), config.attack_samples, seed=split.seed)
    return prepared


def _test_arrays(prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    if prepared.test is not None:
        return prepared.test.images, prepared.test.labels
    return prepared.images.images[prepared.split.test], prepared.images.labels[prepared.split.test]


def describe(config: RunConfig, prepared: Prepared) -> dict:
    """The config.json of a run: what a reader needs to trust and re-make its leaderboard."""
    images, split, test = prepared.images, prepared.split, prepared.test
    weights = config.backbone.weights
    return {
        "robench_version": _version("robench"),
        "command": config.command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "name": config.name,
        "dataset": {"name": images.name, "description": images.description, "n_images": len(images),
                    "classes": list(images.classes)},
        "split": {
            "seed": split.seed, "fingerprint": split.fingerprint,
            "n_train": len(split.train), "n_val": len(split.val),
            "n_test": len(split.test) if test is None else len(test),
            "test_set": "lesion-grouped split of the dataset" if test is None else test.description,
        },
        "backbone": {
            "name": config.backbone.name, "weights": config.backbone.describe_weights(),
            "weights_sha256": file_sha256(weights) if weights else None,
            "image_size": config.backbone.image_size,
        },
        "seeds": config.seeds,
        "strategies": [s.label for s in config.strategies],
        "attacks": [a.label for a in config.attacks],
        "eps": config.eps,
        "protocol": config.protocol,
        "attack_samples": None if prepared.attacked is None else {
            "n": len(prepared.attacked), "of": len(_test_arrays(prepared)[1]), "seed": split.seed,
            "how": "class-stratified subset of the test set, the same for every strategy and seed"},
        "versions": {name: _version(name) for name in ("robench", "torch", "timm", "torchattacks", "peft")}
        | {"python": platform.python_version()},
        "device": str(resolve_device(config.device)),
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RobenchError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise RobenchError(f"unknown device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def make_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RobenchError(f"cannot write to output directory {out} ({exc.strerror}): pass a writable --out") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _failure(exc: BaseException, **fields) -> dict:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if isinstance(exc, torch.OutOfMemoryError):
        message += " (lower --batch-size for training or --attack-batch-size for attacks)"
    return fields | {"status": "failed", "error": message}


def _summary_line(label: str, seed: int, rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return f"{label} seed {seed}: FAILED ({rows[0]['error'] if rows else 'no rows'})"
    clean = ok[0]
    attacked = ", ".join(f"{r['attack']}@{r['eps']:g} {100 * r['robust_acc']:.1f}%" for r in ok if r["attack"] != "none")
    failed = len(rows) - len(ok)
    return (f"{label} seed {seed}: clean acc {100 * clean['clean_acc']:.1f}%, balanced {100 * clean['clean_bacc']:.1f}%"
            + (f"; robust {attacked}" if attacked else "") + (f"; {failed} cells failed" if failed else ""))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _refuse_duplicates(labels: list[str], kind: str) -> None:
    seen = {label for label in labels if labels.count(label) > 1}
    if seen:
        raise RobenchError(f"{kind} {sorted(seen)[0]!r} is listed twice: list each once")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
