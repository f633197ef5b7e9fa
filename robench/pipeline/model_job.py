"""The work of one (strategy, seed) model of the grid: train it (or load its checkpoint), then
attack it at every eps, yielding a row per cell. Every executor (robench.pipeline.executors) runs this;
a cell that fails is recorded with its error and the others go on."""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from robench.attack import CLEAN, TransferAttack, exact_arithmetic, flushing_subnormals, frozen
from robench.backbone import Normalized
from robench.core.metrics import accuracy
from robench.defense import NONE
from robench.errors import PluginError, one_line
from robench.pipeline import checkpoints, compute, corruptions, escalation, features, resume, transfer
from robench.pipeline.evaluate import attack_sweep, clean_calibration, clean_metrics, logits_of, transfer_sweep
from robench.pipeline.fingerprint import model_key, run_settings
from robench.pipeline.memory import PeakMemory
from robench.pipeline.models import create_backbone
from robench.pipeline.plan import Plan, Planned, package_of
from robench.pipeline.prepare import Prepared, attacked_images, test_arrays
from robench.pipeline.train import train


def model_rows(strategy: Planned, seed: int, *, plan: Plan, prepared: Prepared, settings: dict,
               done: frozenset | set = frozenset()) -> Iterator[dict]:
    """The work of one (strategy, seed) cell of the grid, as every executor runs it: its rows.

    Deterministic kernels are switched on here too, since a Ray task runs in a process of its own.
    """
    with numerics():
        yield from run_model(plan, strategy, seed, prepared, settings, done)


def lost_model_rows(plan: Plan, strategy: Planned, seed: int, done, error: BaseException) -> list[dict]:
    """A failed row for each cell still to do of a model whose work was lost outside run_model's own
    error handling (a Ray worker killed for memory, a machine gone); a resumed run retries them."""
    config, attacks = plan.config, plan.attacks
    base = _model_fields(strategy, seed)
    cells = [(CLEAN, CLEAN, 0.0)] + [(a.label, a.plugin.name, eps) for a in attacks for eps in config.eps]
    cells += [(label, escalation.ESCALATION, eps) for label, _ in _escalations(config, attacks) for eps in config.eps]
    by_label = {a.label: a for a in attacks}
    lost = [base | _failure(error, attack=label, attack_name=name, eps=eps)
            | (transfer.row_fields(plan, by_label[label], strategy) if label in by_label else {})
            for label, name, eps in cells if resume.cell(strategy.label, seed, label, eps) not in done]
    return lost + [base | corruptions.fields(name, severity) | _failure(error) for name, severity in _corruption_cells(config)
                   if resume.cell(strategy.label, seed, name, float(severity)) not in done]


def run_model(plan: Plan, strategy: Planned, seed: int, prepared: Prepared, settings: dict,
              done: frozenset | set = frozenset()):
    """Train one (strategy, seed) and yield its rows: a clean row, then one per attack and eps.

    Cells in ``done`` (see resume.finished) are not yielded again; an attack whose every eps is
    done is not run, and a model with every cell done is neither trained nor loaded.
    """
    config, attacks, device = plan.config, plan.attacks, plan.device
    base = _model_fields(strategy, seed)

    def missing_eps(attack: str) -> list[float]:
        return [eps for eps in config.eps if resume.cell(strategy.label, seed, attack, eps) not in done]

    needs_clean = resume.cell(strategy.label, seed, CLEAN, 0.0) not in done
    shifts = [cell for cell in _corruption_cells(config) if resume.cell(strategy.label, seed, cell[0], float(cell[1])) not in done]
    escalations = [(wanted, missing) for wanted in _escalations(config, attacks) if (missing := missing_eps(wanted[0]))]
    # An escalation attacks what every attack left: with one to do, every attack runs again (rows
    # already written are not written twice); else only the attacks with cells to do.
    attacks = attacks if escalations else [attack for attack in attacks if missing_eps(attack.label)]
    if not needs_clean and not attacks and not shifts:
        return
    try:
        model, train_info = train_model(plan, strategy, seed, prepared, settings=settings)
        test_images, test_labels = test_arrays(prepared)
        with exact_arithmetic():  # the arithmetic of the attacks' own check of what survived
            clean_logits = logits_of(model, test_images, config.attack_batch_size, device)
        clean_preds, clean_probs = clean_logits.argmax(1), torch.softmax(clean_logits, dim=1)
        base |= clean_metrics(test_labels, clean_preds) | train_info
        clean_calibrated = clean_calibration(test_labels, clean_logits)
        if prepared.attacked is not None:
            keep = torch.as_tensor(prepared.attacked)
            test_images, test_labels, clean_preds = test_images[keep], test_labels[keep], clean_preds[keep]
            clean_probs = clean_probs[keep]
        base |= {"n_attacked": len(test_labels), "attack_clean_acc": accuracy(clean_preds == test_labels)}
    except Exception as exc:  # noqa: BLE001  (a failed cell is recorded, the run goes on)
        if needs_clean:
            yield base | _failure(exc, attack=CLEAN, attack_name=CLEAN, eps=0.0)
        for attack in attacks:
            for eps in missing_eps(attack.label):
                yield base | _failure(exc, attack=attack.label, attack_name=attack.plugin.name, eps=eps)
        for (label, _), missing in escalations:
            for eps in missing:
                yield base | _failure(exc, attack=label, attack_name=escalation.ESCALATION, eps=eps)
        for name, severity in shifts:
            yield base | corruptions.fields(name, severity) | _failure(exc)
        return
    if needs_clean:
        yield base | {"attack": CLEAN, "attack_name": CLEAN, "eps": 0.0, "status": "ok", "error": None,
                      "robust_acc": base["clean_acc"], "robust_bacc": base["clean_bacc"],
                      "clean_pred": clean_preds.tolist()} | clean_calibrated
    sweeps = {}  # attack label -> eps -> metrics, of the attacks that ran: what escalation starts from
    for attack in attacks:
        cell = base | {"attack": attack.label, "attack_name": attack.plugin.name,
                       "attack_family": attack.plugin.family, "attack_norm": attack.plugin.norm,
                       "attack_black_box": attack.plugin.black_box} | transfer.row_fields(plan, attack, strategy)
        try:
            seed_everything(seed)
            # Every eps of the command, even those done: attacks with random starts draw them per
            # sweep, so only the same sweep gives the rows an uninterrupted run would have written.
            if isinstance(attack.plugin, TransferAttack):
                crafted = transfer.examples_for(plan, attack, seed, prepared, settings, test_images, test_labels,
                                                train=lambda source: train_model(plan, source, seed, prepared, settings)[0],
                                                reseed=seed_everything)
                metrics = transfer_sweep(model, crafted, test_labels, clean_preds, clean_probs, config.attack_batch_size, device)
            else:
                metrics = attack_sweep(model, attack.plugin, config.eps, test_images, test_labels, clean_preds,
                                       config.attack_batch_size, device, label=f"{strategy.label} {attack.label}",
                                       precision=attack.precision, clean_probs=clean_probs)
        except Exception as exc:  # noqa: BLE001
            for eps in missing_eps(attack.label):
                yield cell | _failure(exc, "attack", eps=eps)
            continue
        sweeps[attack.label] = metrics
        for eps in missing_eps(attack.label):
            yield cell | {"eps": eps, "status": "ok", "error": None} | metrics[eps]
    if escalations:
        with frozen(model), exact_arithmetic():
            found = escalation.rows(escalations, sweeps, attacks, test_images, test_labels, clean_preds,
                                    model, device, config.escalation, config.attack_batch_size,
                                    reseed=lambda: seed_everything(seed))
        for label, eps, metrics in found:
            cell = base | {"attack": label, "attack_name": escalation.ESCALATION, "attack_family": escalation.ESCALATION,
                           "attack_norm": escalation.NORM, "attack_black_box": False, "eps": eps}
            if isinstance(metrics, Exception):
                yield cell | _failure(metrics, "attack")
            else:
                yield cell | {"status": "ok", "error": None} | metrics
    if shifts:
        ids = attacked_images(prepared)["ids"]
        for name, severity, metrics in corruptions.evaluate(model, test_images, test_labels, ids, clean_preds, shifts, seed,
                                                            config.attack_batch_size, device):
            cell = base | corruptions.fields(name, severity)
            yield cell | (_failure(metrics, "attack") if isinstance(metrics, Exception) else {"status": "ok", "error": None} | metrics)


def _corruption_cells(config) -> list[tuple[str, int]]:
    return [(name, severity) for name in config.corruptions for severity in config.severities]


def _escalations(config, attacks: list[Planned]) -> list[tuple[str, Planned | None]]:
    """The escalation rows of a model (robench.pipeline.escalation); none when the run turned escalation off."""
    return escalation.labels_for(attacks, config.escalation) if config.escalation else []


def _model_fields(strategy: Planned, seed: int) -> dict:
    """The fields that name a model in each of its rows."""
    return {"strategy": strategy.label, "strategy_name": strategy.plugin.name, "seed": seed,
            "defense": strategy.defense.label if strategy.defense else NONE,
            "defense_name": strategy.defense.plugin.name if strategy.defense else NONE}


def train_trial(plan: Plan, strategy: Planned, seed: int, prepared: Prepared, on_epoch) -> None:
    """One ``--tune`` trial (robench.pipeline.tuning): the model job's training, reporting each epoch,
    with no checkpoint read or written (a trial's weights are not kept)."""
    train_model(plan, strategy, seed, prepared, keep=False, on_epoch=on_epoch)


def train_model(plan: Plan, strategy: Planned, seed: int, prepared: Prepared, settings: dict | None = None,
                keep: bool = True, on_epoch=None):
    """Build, adapt and train one model, or load what it trained from an earlier run's checkpoint;
    return it ready for attacks, with its training facts. ``settings``: the run's
    (robench.pipeline.fingerprint.run_settings), which the checkpoint's key is cut from."""
    config, device = plan.config, plan.device
    settings = settings or run_settings(plan, prepared)
    settings = settings | {"recipes": settings["recipes"] | {strategy.label: dataclasses.asdict(strategy.recipe)}}
    num_classes = len(prepared.images.classes)
    seed_everything(seed)
    vit, mean, std = create_backbone(config.backbone, num_classes)
    vit.to(device)  # before recording its buffers: .to() replaces buffer objects, and they are told apart by id
    backbone_params = _count(vit)
    own_buffers = checkpoints.base_buffers(vit)
    try:
        adapted = strategy.plugin.adapt(vit)
    except torch.OutOfMemoryError:
        raise  # not the plugin's bug: its row says which batch size to lower
    except Exception as exc:  # the cell fails naming the plugin's package; the other models go on
        raise PluginError(f"strategy {strategy.plugin.name} (package {package_of('strategy', strategy.plugin)}) failed in "
                          f"adapt ({one_line(exc)})") from exc
    model = Normalized(adapted, mean, std).to(device)
    trainable = _count(model, trainable_only=True)
    if not strategy.plugin.trains:  # a model trained elsewhere (the `given` strategy): only evaluated
        return _for_evaluation(strategy, adapted, mean, std, device), {
            "trainable_params": 0, "backbone_params": backbone_params, "epochs": 0, "best_epoch": None,
            "train_seconds": 0.0, "seconds_per_epoch": None, "peak_mem_mb": None}
    key = model_key(settings, strategy, seed, prepared)
    stored = checkpoints.path_for(config.out, key)
    info = checkpoints.load(stored, adapted, own_buffers, key) if keep else None
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
            symmetries=prepared.dataset.symmetries, on_epoch=on_epoch,
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
    if keep:
        checkpoints.save(stored, adapted, own_buffers, key, info)
    return _for_evaluation(strategy, adapted, mean, std, device), info


def _for_evaluation(strategy: Planned, adapted, mean, std, device) -> Normalized:
    """The trained model as it is evaluated and attacked: eval mode, nothing requires grad, and none
    of training's speed settings (channels-last, compile): they may change float rounding, and an
    attack's arithmetic must be the one an independent evaluator would use."""
    final = Normalized(strategy.plugin.for_evaluation(adapted), mean, std).to(device).eval()
    final.requires_grad_(False)
    return final


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


def _count(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


