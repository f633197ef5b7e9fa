"""What a run is asked to do (RunConfig), settled once into the Plan every later step receives.

``plan(config)`` decides what depends on the machine (the device, the precisions it computes,
threads, a Ray task's GPU share, absolute paths), resolves every plugin the run names and checks
everything that can be checked before data is decoded or a model trains: names, options, recipes,
eps, the dataset and its test set, the backbone provider. So bad input costs seconds, not hours.
The Plan is immutable; data preparation, the fingerprint, provenance and every model job read
their settings from it, and none resolves one again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import torch

from robench.attack import PRETRAINED, Attack, MinimalAttack, TransferAttack
from robench.backbone import BackboneSpec
from robench.core.names import check_name
from robench.dataset import Dataset
from robench.defense import NONE, Defense, combined_label
from robench.errors import PluginError, RobenchError, did_you_mean, one_line
from robench.pipeline import compute, corruptions, executors, threads
from robench.pipeline.escalation import MAX_ROUNDS
from robench.pipeline.escalation import ROUNDS as ESCALATION_ROUNDS
from robench.pipeline.limits import check_numbers, check_recipe
from robench.pipeline.options import Spec, coerce, resolve
from robench.pipeline.prepare import SPLIT_TEST, Prepared, resolve_dataset
from robench.pipeline.registry import load_registry
from robench.pipeline.tuning import DEFAULT_BUDGET, Budget
from robench.pipeline.tuning import check as check_tuning
from robench.strategy import RECIPE_FIELDS, Recipe, Strategy


@dataclass(frozen=True)
class RunConfig:
    """Everything a run is asked to do; the CLI builds it from flags, a notebook can build it directly.
    Frozen: ``plan`` returns a settled copy, never changes the one it is given."""

    dataset: str  # a --dataset spec: "ham10000", "csv:file=labels.csv:group=patient"
    backbone: BackboneSpec
    strategies: list[Spec]
    attacks: list[Spec]
    eps: list[float]
    seeds: list[int]
    out: Path
    leaderboard_dir: Path | None  # also publish the page there (robench.report.publish); None: only in ``out``
    name: str
    data_dir: Path | None = None
    subset: int | None = None
    split_seed: int = 0
    test_set: str = SPLIT_TEST  # the split's held-out part, or an external test set of the dataset
    test_dir: Path | None = None
    recipe_overrides: dict = field(default_factory=dict)  # global --lr / --epochs / --batch-size
    attack_batch_size: int = 64
    attack_samples: int | None = None  # attack a class-stratified subset of this many test images
    escalation: int | None = ESCALATION_ROUNDS  # rounds of escalation on the survivors (robench.pipeline.escalation); None: off
    device: str = "auto"
    protocol: str = "all"
    command: str = ""
    train_precision: str = "auto"  # bf16 autocast on CUDA, fp32 on a CPU (robench.pipeline.compute)
    attack_precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    executor: str = "local"  # or "ray" (robench.pipeline.executors)
    ray_address: str | None = None
    ray_gpus_per_task: float | None = None
    defenses: list[Spec] = field(default_factory=lambda: [Spec(NONE, NONE)])  # "none": train without one
    reference: str | None = None  # the strategy label the page's paired tests compare with
    threads: int | None = None  # torch threads; None: chosen from the cores (robench.pipeline.threads)
    log_json: Path | None = None  # also append the run's progress events there (robench.core.progress)
    force: bool = False  # replace a page in leaderboard_dir made from other runs
    formats: tuple[str, ...] = ("md",)  # the page, and its table as "csv" and "json" (robench.report.export)
    tune: dict | None = None  # --tune: recipe field -> its range, or None for the strategy's (robench.pipeline.tuning)
    tune_budget: Budget = DEFAULT_BUDGET  # what each strategy's search may spend
    corruptions: list[str] = field(default_factory=list)  # MedMNIST-C corruptions of the test images (robench.pipeline.corruptions)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # their severities, 1-5
    track: str | None = None  # --track mlflow: the finished run logged there too (robench.report.mlflow_tracking)
    # The plugin of ``dataset`` where the CLI already resolved it (for its defaults): not resolved twice.
    dataset_plugin: Dataset | None = field(default=None, compare=False, repr=False)


@dataclass
class Planned:
    """A strategy (with the defense it trains under, if any), an attack or a defense resolved from
    its spec, ready to run. A defended strategy's label is the combined one: ``full + pgd_at``."""

    label: str
    plugin: Strategy | Attack | Defense
    recipe: Recipe | None = None
    defense: Planned | None = None
    precision: str = "fp32"  # an attack's arithmetic (--attack-precision)


class Plan(NamedTuple):
    """The run, settled: what every step after planning receives, and reads its settings from."""

    strategies: list[Planned]
    attacks: list[Planned]
    dataset: Dataset
    config: RunConfig  # settled (see settle): absolute paths, precisions and threads decided
    device: torch.device
    surrogates: dict = {}  # a transfer attack's label -> the strategy its examples are crafted on (see surrogates)


def plan(config: RunConfig) -> Plan:
    """Settle ``config`` on this machine and resolve every spec into a plugin (and a strategy's
    recipe), failing on the first bad one."""
    device = compute.resolve_device(config.device)
    config = settle(config, device)  # first: an attack's precision is the one its device computes
    check_numbers(config)
    check_name(config.name, "--name")
    registry = load_registry()
    dataset = config.dataset_plugin or resolve_dataset(config.dataset)
    if config.test_set != SPLIT_TEST and config.test_set not in dataset.test_sets:
        valid = ", ".join([SPLIT_TEST, *dataset.test_sets])
        raise RobenchError(f"--test-set {config.test_set!r} is not a test set of dataset {dataset.name!r}: use one of {valid}")
    registry.get("backbone", config.backbone.provider)
    if config.escalation is not None and not (isinstance(config.escalation, int) and 1 <= config.escalation <= MAX_ROUNDS):
        raise RobenchError(f"--escalation {config.escalation!r} is not a number of rounds from 1 to {MAX_ROUNDS}: "
                           f"give one (default {ESCALATION_ROUNDS}), or off to keep the configured attacks' worst case alone")
    for value in config.eps:
        if not 0 <= value <= 1:
            raise RobenchError(f"eps {value} is outside [0, 1]: eps is in pixel units, e.g. 0.01 or 2/255")
    strategies = [_strategy(registry, spec, config.recipe_overrides) for spec in config.strategies]
    precisions = config.attack_precision
    # a transfer attack is crafted and answered in fp32 whatever --attack-precision says: no bf16 twin of it
    attacks = [Planned(compute.attack_label(spec.label, precision, precisions), plugin, precision=precision)
               for spec in config.attacks for plugin in [resolve(registry, "attack", spec)[0]]
               for precision in (["fp32"] if isinstance(plugin, TransferAttack) and "fp32" in precisions.split(",")
                                 else precisions.split(","))]
    refuse_duplicates([p.label for p in strategies], "strategy")
    refuse_duplicates([p.label for p in attacks], "attack")
    for attack in attacks:
        eps_max = getattr(attack.plugin, "eps_max", None)
        if isinstance(attack.plugin, MinimalAttack) and max(config.eps, default=0) > eps_max:
            raise RobenchError(f"attack {attack.label} searches eps* up to eps_max={eps_max:g}, below --eps "
                               f"{max(config.eps):g}: its rows there would count untested images as robust; "
                               f"raise eps_max (e.g. {attack.plugin.name}:eps_max={max(config.eps):g}) or drop that eps")
    defenses = plan_defenses(registry, config.defenses)
    strategies = [_defended(strategy, defense) for strategy in strategies for defense in defenses]
    _refuse_training_options(strategies, config)
    corruptions.check(config.corruptions, config.severities)
    if config.track is not None:
        from robench.report import mlflow_tracking

        mlflow_tracking.check(config.track)
    if config.tune:
        check_tuning(strategies, config.tune)
    if config.reference is not None and config.reference not in [p.label for p in strategies]:
        raise RobenchError(f"--reference {config.reference!r} is not a strategy of this run: use one of "
                           f"{', '.join(p.label for p in strategies)}")
    return Plan(strategies, attacks, dataset, config, device, surrogates(registry, attacks, strategies, config))


def surrogates(registry, attacks: list[Planned], strategies: list[Planned], config: RunConfig) -> dict[str, Planned]:
    """The model each transfer attack crafts on: for ``source=pretrained`` the public backbone with a
    linear head, trained as the ``linear_probe`` strategy with the run's recipe overrides (so the run's
    own linear probe, when it has one, is the same checkpoint); else the strategy of the run that
    ``source`` names, by its label or, where one strategy has it, by its plugin's name."""
    found = {}
    for attack in attacks:
        if not isinstance(attack.plugin, TransferAttack):
            continue
        source = attack.plugin.source
        if source == PRETRAINED:
            found[attack.label] = _strategy(registry, Spec("linear_probe", "linear_probe"), config.recipe_overrides)
            continue
        named = [s for s in strategies if s.label == source] or [s for s in strategies if s.plugin.name == source]
        if len(named) != 1:
            labels = [s.label for s in strategies]
            why = "names several strategies of this run" if named else "is not a strategy of this run"
            raise RobenchError(f"attack {attack.label}: source {source!r} {why}: {did_you_mean(source, [PRETRAINED, *labels])}"
                               f"use {PRETRAINED} or one of {', '.join(labels)}")
        found[attack.label] = named[0]
    return found


def settle(config: RunConfig, device: torch.device) -> RunConfig:
    """The config with what depends on the device decided (``auto`` precision, a task's GPU share),
    refused in one line where it does not fit the device, and with absolute paths, which a Ray
    worker in another directory (or on another machine) reads the same."""
    weights = config.backbone.weights
    return replace(
        config,
        train_precision=compute.resolve_precision(config.train_precision, device, "--train-precision"),
        attack_precision=compute.resolve_attack_precisions(config.attack_precision, device),
        ray_gpus_per_task=executors.gpus_per_task(config.executor, config.ray_gpus_per_task, device, config.device),
        out=Path(config.out).absolute(),
        eps=list(dict.fromkeys(config.eps)),  # 0.01, 1/100 and 0.010 are one eps: one row, not three alike
        threads=threads.choose(config.threads),
        backbone=replace(config.backbone, weights=None if weights is None else Path(weights).absolute()),
    )


def _strategy(registry, spec: Spec, overrides: dict) -> Planned:
    strategy, recipe_text = resolve(registry, "strategy", spec, reserved=RECIPE_FIELDS)
    changes = {k: coerce(v, RECIPE_FIELDS[k], f"{spec.text!r}: option {k}") for k, v in recipe_text.items()}
    try:
        recipe = strategy.recipe.override(**overrides).override(**changes)
    except ValueError as exc:
        raise PluginError(f"invalid recipe for {spec.text!r}: {exc}") from None
    check_recipe(recipe, spec.text)
    return Planned(spec.label, strategy, recipe)


def plan_defenses(registry, specs: list[Spec]) -> list[Planned | None]:
    """Resolve ``--defenses``; ``none`` (no defense, an undefended model) becomes None."""
    defenses = []
    for spec in specs:
        if spec.name == NONE and spec.options:
            raise PluginError(f"defense {NONE!r} takes no options, got {spec.text!r}: write none, or a defense with options like pgd_at:eps=0.01")
        defenses.append(None if spec.name == NONE else Planned(spec.label, resolve(registry, "defense", spec)[0]))
    refuse_duplicates([spec.label for spec in specs], "defense")
    return defenses


def _refuse_training_options(strategies: list[Planned], config: RunConfig) -> None:
    """A strategy that trains nothing (``given``: a model trained elsewhere) takes no defense and no
    search: both would change how it trains, and it does not."""
    for strategy in strategies:
        if strategy.plugin.trains:
            continue
        if strategy.defense is not None:
            raise RobenchError(f"{strategy.label}: strategy {strategy.plugin.name} attacks a model trained elsewhere and trains "
                               "nothing, so no defense can train it: drop --defenses (or train the model with the defense yourself)")
        if config.tune:
            raise RobenchError(f"--tune searches training recipes, and strategy {strategy.plugin.name} trains nothing: drop --tune")


def _defended(strategy: Planned, defense: Planned | None) -> Planned:
    """The strategy trained under ``defense``, labelled ``strategy + defense`` (as is, without one)."""
    if defense is None:
        return strategy
    return Planned(combined_label(strategy.label, defense.label), strategy.plugin, strategy.recipe, defense)


def check_strategies_fit(strategies: list[Planned], model: torch.nn.Module, backbone: str) -> None:
    """Adapt a copy of the backbone with each strategy, so that one which cannot serve it (VPT on a
    model that is not a timm ViT, LoRA targets it lacks) fails in one line before any model trains."""
    for plugin in {id(strategy.plugin): strategy.plugin for strategy in strategies}.values():  # once per strategy, not per defense
        try:
            plugin.adapt(copy.deepcopy(model))
        except RobenchError:
            raise
        except Exception as exc:  # noqa: BLE001  (a third party's adapt may raise anything)
            raise PluginError(f"strategy {plugin.name} (package {package_of('strategy', plugin)}) cannot adapt backbone {backbone} "
                              f"({one_line(exc)}): "
                              "pick another backbone or strategy (docs/backbones.md lists what works)") from None


def package_of(kind: str, plugin) -> str:
    """The distribution a plugin instance came from, for messages that say whom to tell; its module
    for one that was never registered (built in a notebook)."""
    try:
        found = load_registry().get(kind, plugin.name)
    except PluginError:
        return type(plugin).__module__
    return found.package if isinstance(plugin, found.factory) else type(plugin).__module__


def tell_attacks_the_classes(attacks: list[Planned], prepared: Prepared) -> None:
    """Let attacks that take class names (``pgd:target=nv``) resolve them, before anything trains."""
    for attack in attacks:
        try:
            attack.plugin.for_dataset(list(prepared.images.classes), prepared.positive)
        except ValueError as exc:
            raise RobenchError(f"attack {attack.label}: {exc}") from None
        except Exception as exc:  # noqa: BLE001  (a third party's bug, named by its package)
            raise PluginError(f"attack {attack.label} (package {package_of('attack', attack.plugin)}) failed in for_dataset "
                              f"({one_line(exc)})") from None


def refuse_duplicates(labels: list[str], kind: str) -> None:
    seen = {label for label in labels if labels.count(label) > 1}
    if seen:
        raise RobenchError(f"{kind} {sorted(seen)[0]!r} is listed twice: list each once")
