"""Runs the grid: for each strategy, defense and seed, train; then each attack at each eps; a row per cell.

Everything that can be checked is checked before the first model trains (names, options,
recipes, backbone and weights, data), so bad input costs seconds, not hours. A cell that fails
while running is recorded with its error and the run goes on.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from robench import checkpoints, compute, data, executors, features, leaderboard, results, resume
from robench.attack import Attack, MinimalAttack, exact_arithmetic, flushing_subnormals
from robench.backbone import BackboneSpec, Normalized, check_backbone, create_backbone
from robench.defense import NONE, Defense, combined_label
from robench.errors import PluginError, RobenchError
from robench.evaluate import attack_sweep, clean_metrics, predict
from robench.memory import PeakMemory
from robench.metrics import accuracy, majority_accuracy
from robench.prepare import Prepared, _test_arrays, malignant_classes, prepare_data  # noqa: F401  (prepare_data: the API bench/ uses)
from robench.provenance import describe
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
    train_precision: str = "auto"  # bf16 autocast on CUDA, fp32 on a CPU (robench.compute)
    attack_precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    executor: str = "local"  # or "ray" (robench.executors)
    ray_address: str | None = None
    ray_gpus_per_task: float | None = None
    defenses: list[Spec] = field(default_factory=lambda: [Spec(NONE, NONE)])  # "none": train without one
    reference: str | None = None  # the strategy label the page's paired tests compare with


@dataclass
class Planned:
    """A strategy (with the defense it trains under, if any), an attack or a defense resolved from
    its spec, ready to run. A defended strategy's label is the combined one: ``full + pgd_at``."""

    label: str
    plugin: Strategy | Attack | Defense
    recipe: Recipe | None = None
    defense: Planned | None = None


def run(config: RunConfig) -> tuple[Path, list[dict]]:
    """Run the whole grid; return the leaderboard path and the failed rows.

    On an ``out`` that holds an earlier run of compatible settings, only the cells missing or
    failed there are run (see robench.resume); two runs never write one ``out`` at once.
    """
    strategies, attacks = plan(config)
    device = compute.resolve_device(config.device)
    config = settle(config, device)
    executor = executors.choose(config.executor, config.ray_address, config.ray_gpus_per_task)
    check_backbone(config.backbone)  # cheap checks before the data is decoded
    make_out_dir(config.out)
    with resume.exclusive(config.out), numerics():
        return _run_grid(config, strategies, attacks, device, executor)


def settle(config: RunConfig, device: torch.device) -> RunConfig:
    """The config with what depends on the device decided (``auto`` precision, a task's GPU share),
    refused in one line where it does not fit the device, and with absolute paths, which a Ray
    worker in another directory (or on another machine) reads the same."""
    weights = config.backbone.weights
    return replace(
        config,
        train_precision=compute.resolve_precision(config.train_precision, device, "--train-precision"),
        attack_precision=compute.resolve_precision(config.attack_precision, device, "--attack-precision"),
        ray_gpus_per_task=executors.gpus_per_task(config.executor, config.ray_gpus_per_task, device),
        out=Path(config.out).absolute(),
        backbone=replace(config.backbone, weights=None if weights is None else Path(weights).absolute()),
    )


def _run_grid(config: RunConfig, strategies: list[Planned], attacks: list[Planned], device,
              executor=executors.local) -> tuple[Path, list[dict]]:
    num_classes = len(data.HAM10000_CLASSES)
    prepared = prepare_data(config)
    tell_attacks_the_classes(attacks, prepared)
    vit, _, _ = create_backbone(config.backbone, num_classes)  # weights that do not fit fail before any training
    backbone_params = _count(vit)
    check_strategies_fit(strategies, vit)
    del vit
    majority = majority_accuracy(prepared.images.labels[prepared.split.train], _test_arrays(prepared)[1])
    described = describe(config, prepared, backbone_params) | {"comparable": resume.comparable(config, prepared, strategies)}
    results.write_config(config.out, resume.start(config.out, described))
    done = resume.finished(results.read_rows(config.out))

    failed = []
    cells = [(strategy, seed) for strategy in strategies for seed in config.seeds]
    context = dict(config=config, attacks=attacks, prepared=prepared, device=device, num_classes=num_classes, done=done)
    with closing(executor(model_rows, cells, context)) as finished_models:
        for finished in finished_models:
            strategy, seed = finished.cell
            fresh = 0
            if finished.error is not None:
                finished.rows = lost_model_rows(config, strategy, attacks, seed, done, finished.error)
            for row in finished.rows:
                row |= {"majority_acc": majority}
                results.append_row(config.out, row)
                fresh += 1
                if row["status"] != "ok":
                    failed.append(row)
            rows = results.latest(results.read_rows(config.out))
            done_rows = [r for r in rows if r["strategy"] == strategy.label and r["seed"] == seed]
            say(_summary_line(strategy.label, seed, done_rows) + ("" if fresh else " (finished earlier)"))
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
    for attack in attacks:
        eps_max = getattr(attack.plugin, "eps_max", None)
        if isinstance(attack.plugin, MinimalAttack) and max(config.eps, default=0) > eps_max:
            raise RobenchError(f"attack {attack.label} searches eps* up to eps_max={eps_max:g}, below --eps "
                               f"{max(config.eps):g}: its rows there would count untested images as robust; "
                               f"raise eps_max (e.g. {attack.plugin.name}:eps_max={max(config.eps):g}) or drop that eps")
    defenses = plan_defenses(registry, config.defenses)
    strategies = [_defended(strategy, defense) for strategy in strategies for defense in defenses]
    if config.reference is not None and config.reference not in [p.label for p in strategies]:
        raise RobenchError(f"--reference {config.reference!r} is not a strategy of this run: use one of "
                           f"{', '.join(p.label for p in strategies)}")
    return strategies, attacks


def plan_defenses(registry, specs: list[Spec]) -> list[Planned | None]:
    """Resolve ``--defenses``; ``none`` (no defense, an undefended model) becomes None."""
    defenses = []
    for spec in specs:
        if spec.name == NONE and spec.options:
            raise PluginError(f"defense {NONE!r} takes no options, got {spec.text!r}: write none, or a defense with options like pgd_at:eps=0.01")
        defenses.append(None if spec.name == NONE else Planned(spec.label, resolve(registry, "defense", spec)[0]))
    _refuse_duplicates([spec.label for spec in specs], "defense")
    return defenses


def _defended(strategy: Planned, defense: Planned | None) -> Planned:
    """The strategy trained under ``defense``, labelled ``strategy + defense`` (as is, without one)."""
    if defense is None:
        return strategy
    return Planned(combined_label(strategy.label, defense.label), strategy.plugin, strategy.recipe, defense)


def check_strategies_fit(strategies: list[Planned], vit: torch.nn.Module) -> None:
    """Adapt a copy of the backbone with each strategy, so that one which cannot serve it (VPT on a
    ViT without a CLS token, LoRA targets it lacks) fails before any model trains."""
    for plugin in {id(strategy.plugin): strategy.plugin for strategy in strategies}.values():  # once per strategy, not per defense
        plugin.adapt(copy.deepcopy(vit))


def model_rows(strategy: Planned, seed: int, *, config: RunConfig, attacks: list[Planned], prepared: Prepared, device,
               num_classes: int, done: frozenset | set = frozenset()) -> Iterator[dict]:
    """The work of one (strategy, seed) cell of the grid, as every executor runs it: its rows.

    Deterministic kernels are switched on here too, since a Ray task runs in a process of its own.
    """
    with numerics():
        yield from run_model(config, strategy, attacks, seed, prepared, device, num_classes, done)


def lost_model_rows(config: RunConfig, strategy: Planned, attacks: list[Planned], seed: int, done, error: BaseException) -> list[dict]:
    """A failed row for each cell still to do of a model whose work was lost outside run_model's own
    error handling (a Ray worker killed for memory, a machine gone); a resumed run retries them."""
    base = _model_fields(strategy, seed)
    cells = [("none", "none", 0.0)] + [(a.label, a.plugin.name, eps) for a in attacks for eps in config.eps]
    return [base | _failure(error, attack=label, attack_name=name, eps=eps)
            for label, name, eps in cells if resume.cell(strategy.label, seed, label, eps) not in done]


def run_model(config, strategy: Planned, attacks: list[Planned], seed: int, prepared: Prepared, device, num_classes,
              done: frozenset | set = frozenset()):
    """Train one (strategy, seed) and yield its rows: a clean row, then one per attack and eps.

    Cells in ``done`` (see resume.finished) are not yielded again; an attack whose every eps is
    done is not run, and a model with every cell done is neither trained nor loaded.
    """
    base = _model_fields(strategy, seed)

    def missing_eps(attack: str) -> list[float]:
        return [eps for eps in config.eps if resume.cell(strategy.label, seed, attack, eps) not in done]

    needs_clean = resume.cell(strategy.label, seed, "none", 0.0) not in done
    attacks = [attack for attack in attacks if missing_eps(attack.label)]
    if not needs_clean and not attacks:
        return
    try:
        model, train_info = train_model(config, strategy, seed, prepared, device, num_classes)
        test_images, test_labels = _test_arrays(prepared)
        with exact_arithmetic():  # the arithmetic of the attacks' own check of what survived
            clean_preds = predict(model, test_images, config.attack_batch_size, device)
        base |= clean_metrics(test_labels, clean_preds) | train_info
        if prepared.attacked is not None:
            keep = torch.as_tensor(prepared.attacked)
            test_images, test_labels, clean_preds = test_images[keep], test_labels[keep], clean_preds[keep]
        base |= {"n_attacked": len(test_labels), "attack_clean_acc": accuracy(clean_preds == test_labels)}
    except Exception as exc:  # noqa: BLE001  (a failed cell is recorded, the run goes on)
        if needs_clean:
            yield base | _failure(exc, attack="none", attack_name="none", eps=0.0)
        for attack in attacks:
            for eps in missing_eps(attack.label):
                yield base | _failure(exc, attack=attack.label, attack_name=attack.plugin.name, eps=eps)
        return
    if needs_clean:
        yield base | {"attack": "none", "attack_name": "none", "eps": 0.0, "status": "ok", "error": None,
                      "robust_acc": base["clean_acc"], "robust_bacc": base["clean_bacc"],
                      "clean_pred": clean_preds.tolist()}
    for attack in attacks:
        cell = base | {"attack": attack.label, "attack_name": attack.plugin.name,
                       "attack_family": attack.plugin.family, "attack_black_box": attack.plugin.black_box}
        try:
            seed_everything(seed)
            # Every eps of the command, even those done: attacks with random starts draw them per
            # sweep, so only the same sweep gives the rows an uninterrupted run would have written.
            metrics = attack_sweep(model, attack.plugin, config.eps, test_images, test_labels, clean_preds,
                                   config.attack_batch_size, device, label=f"{strategy.label} {attack.label}",
                                   precision=config.attack_precision)
        except Exception as exc:  # noqa: BLE001
            for eps in missing_eps(attack.label):
                yield cell | _failure(exc, "attack", eps=eps)
            continue
        for eps in missing_eps(attack.label):
            yield cell | {"eps": eps, "status": "ok", "error": None} | metrics[eps]


def _model_fields(strategy: Planned, seed: int) -> dict:
    """The fields that name a model in each of its rows."""
    return {"strategy": strategy.label, "strategy_name": strategy.plugin.name, "seed": seed,
            "defense": strategy.defense.label if strategy.defense else NONE,
            "defense_name": strategy.defense.plugin.name if strategy.defense else NONE}


def train_model(config, strategy: Planned, seed: int, prepared: Prepared, device, num_classes):
    """Build, adapt and train one model, or load what it trained from an earlier run's checkpoint;
    return it ready for attacks, with its training facts."""
    seed_everything(seed)
    vit, mean, std = create_backbone(config.backbone, num_classes)
    vit.to(device)  # before recording its buffers: .to() replaces buffer objects, and they are told apart by id
    backbone_params = _count(vit)
    own_buffers = checkpoints.base_buffers(vit)
    adapted = strategy.plugin.adapt(vit)
    model = Normalized(adapted, mean, std).to(device)
    trainable = _count(model, trainable_only=True)
    key = checkpoints.key(config, strategy, seed, prepared)
    stored = checkpoints.path_for(config.out, key)
    info = checkpoints.load(stored, adapted, own_buffers, key)
    if info is not None:  # trained by an earlier run of this out dir
        return _for_evaluation(strategy, adapted, mean, std, device), info
    if config.channels_last:
        compute.use_channels_last(model)
    if config.compile:
        compute.compile_in_place(model)  # the model trained here; the evaluated one is rebuilt below
    images, split = prepared.images, prepared.split
    train_data = compute.on_device_if_fits((images.images[split.train], images.labels[split.train],
                                            images.images[split.val], images.labels[split.val]), device)
    with PeakMemory(device) as memory:
        result = train(
            model, strategy.plugin, strategy.recipe, train_data[:2], train_data[2:],
            num_classes, seed, device, label=f"{strategy.label} seed {seed}", precision=config.train_precision,
            defense=strategy.defense.plugin if strategy.defense else None,
            features=features.in_run_folder(config.out, key, adapted, config.train_precision, device),
        )
    info = {
        "trainable_params": trainable,
        "backbone_params": backbone_params,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "seconds_per_epoch": result.seconds / result.epochs,
        "peak_mem_mb": memory.mb - compute.device_bytes(train_data) / 2**20,  # the model's, not the data's
    }
    checkpoints.save(stored, adapted, own_buffers, key, info)
    return _for_evaluation(strategy, adapted, mean, std, device), info


def _for_evaluation(strategy: Planned, adapted, mean, std, device) -> Normalized:
    """The trained model as it is evaluated and attacked: eval mode, nothing requires grad, and none
    of training's speed settings (channels-last, compile): they may change float rounding, and an
    attack's arithmetic must be the one an independent evaluator would use."""
    final = Normalized(strategy.plugin.for_evaluation(adapted), mean, std).to(device).eval()
    final.requires_grad_(False)
    return final


def tell_attacks_the_classes(attacks: list[Planned], prepared: Prepared) -> None:
    """Let attacks that take class names (``pgd:target=nv``) resolve them, before anything trains."""
    for attack in attacks:
        try:
            attack.plugin.for_dataset(list(prepared.images.classes), malignant_classes(prepared))
        except ValueError as exc:
            raise RobenchError(f"attack {attack.label}: {exc}") from None


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


@contextmanager
def numerics():
    """How torch computes while a run lasts: deterministic kernels, and subnormal floats flushed to zero.

    Deterministic kernels make the same command give the same rows; ``warn_only``: an op without
    a deterministic kernel warns instead of failing the cell. cuBLAS needs its workspace setting
    before it starts (it is read once per process). Subnormal floats (below 1.2e-38) are slow on
    x86 CPUs: training VPT-shallow on HAM10000 produces them, and flushing them made its training
    3.2x faster with the same accuracy (``python bench/subnormal_flush.py``). Flushing changes
    nothing above that magnitude in training, but it masks an attack's gradient, so attacks, clean
    evaluation and a defense's examples switch it off again (robench.attack.exact_arithmetic).
    It is a CPU setting; GPUs are not affected by it.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before, before_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    flushed_before = flushing_subnormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)
        torch.set_flush_denormal(flushed_before)


def _failure(exc: BaseException, phase: str = "training", **fields) -> dict:
    """The row of a failed cell; ``phase`` ("training" or "attack") picks the batch size an OOM should lower."""
    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
    if isinstance(exc, torch.OutOfMemoryError):
        flag = "--attack-batch-size" if phase == "attack" else "--batch-size (or the strategy's :batch_size=N)"
        message += f" (out of memory in {phase}: lower {flag})"
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


def _count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _refuse_duplicates(labels: list[str], kind: str) -> None:
    seen = {label for label in labels if labels.count(label) > 1}
    if seen:
        raise RobenchError(f"{kind} {sorted(seen)[0]!r} is listed twice: list each once")


