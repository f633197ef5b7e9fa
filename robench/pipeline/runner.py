"""Runs the grid: for each strategy, defense and seed, train; then each attack at each eps; a row per cell.

The order of a run: plan (robench.pipeline.plan: what depends on the device settled, every name and
option checked, into one immutable Plan that every later step receives), decode and split the data (robench.pipeline.prepare), check that the backbone builds and
every strategy can adapt it, write config.json (robench.pipeline.provenance, robench.pipeline.fingerprint), then
hand the (strategy, seed) models to an executor (robench.pipeline.model_job does one model) and append
their rows as they come; last, publish the leaderboard.
"""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np

from robench.attack import CLEAN
from robench.core import progress, results
from robench.core.corruption_names import FAMILY as CORRUPTION
from robench.core.metrics import eps_label, majority_accuracy
from robench.core.names import refuse_link
from robench.errors import RobenchError
from robench.pipeline import checkpoints, executors, features, resume, threads, transfer, tuning
from robench.pipeline.fingerprint import run_settings
from robench.pipeline.limits import check_image_size
from robench.pipeline.model_job import _count, lost_model_rows, model_rows, numerics, seed_everything, train_model, train_trial  # noqa: F401,E501
from robench.pipeline.models import check_backbone, create_backbone
from robench.pipeline.options import Spec  # noqa: F401  (RunConfig's spec type, for callers building one)
from robench.pipeline.plan import Plan, Planned, RunConfig, check_strategies_fit, plan, settle, tell_attacks_the_classes  # noqa: F401
from robench.pipeline.prepare import prepare_data, test_arrays
from robench.pipeline.provenance import describe
from robench.report import leaderboard, publish, rankable


def run(config: RunConfig) -> tuple[Path, list[dict]]:
    """Run the whole grid; return the leaderboard path and the failed rows.

    On an ``out`` that holds an earlier run of compatible settings, only the cells missing or
    failed there are run (see robench.pipeline.resume); two runs never write one ``out`` at once.
    """
    planned = plan(config)
    config, device = planned.config, planned.device
    executor = executors.choose(config.executor, config.ray_address, config.ray_gpus_per_task, config.threads)
    check_backbone(config.backbone)  # cheap checks before the data is decoded
    check_image_size(config.backbone, device)
    publish.claim(publish.pages([config.out], config.leaderboard_dir, config.name), [config.out], config.force)  # not after hours
    with progress.run_log(config.log_json) as log:  # a bad --log-json fails before the run folder exists
        made = next((f for f in [*reversed(config.out.parents), config.out] if not f.exists()), None)  # removed if the run fails at once
        writable_folder(config.out, "--out")
        refuse_links(config.out)
        if config.leaderboard_dir is not None:  # a file or a read-only mount is found now, not after the training
            writable_folder(config.leaderboard_dir, "--leaderboard-dir")
        with resume.exclusive(config.out, made), numerics(), threads.using(config.threads):
            path, failed = _run_grid(planned, executor, log)
    if config.track is not None:
        track(config.out)
    return path, failed


def track(out: Path) -> None:
    """Log the finished run to MLflow (--track mlflow); a failure there keeps the results and says how
    to log them later."""
    from robench.report import mlflow_tracking

    try:
        progress.say(f"tracked: {mlflow_tracking.track(out)}")
    except RobenchError as error:
        raise RobenchError(f"{error}; the results are kept in {out}: log them later with robench track {out}") from None


def _run_grid(planned: Plan, executor, log: progress.RunLog) -> tuple[Path, list[dict]]:
    config, strategies, attacks = planned.config, planned.strategies, planned.attacks
    prepared = prepare_data(config, planned.dataset)
    tell_attacks_the_classes(attacks, prepared)
    model, _, _ = create_backbone(config.backbone, len(prepared.images.classes))  # weights that do not fit fail before any training
    backbone_params = _count(model)
    check_strategies_fit(strategies, model, config.backbone.label)
    del model
    tuned = None
    if config.tune:  # the chosen recipes replace the declared ones in the plan every later step receives
        planned, tuned = tuning.tune(planned, prepared, train_trial, executor)
        strategies = planned.strategies
    majority = majority_accuracy(prepared.images.labels[prepared.split.train], test_arrays(prepared)[1])
    settings = run_settings(planned, prepared)
    results.write_config(config.out, resume.start(config.out, describe(planned, prepared, backbone_params) | {"comparable": settings, "tuning": tuned}))
    done = resume.finished(results.read_rows(config.out))

    failed = []
    cells = [(strategy, seed) for strategy in strategies for seed in config.seeds]
    context = {"plan": planned, "prepared": prepared, "settings": settings, "done": done}
    log.start(len(strategies), len(config.seeds), len(attacks), len(config.eps), config.threads, config.out)
    with closing(executor(model_rows, cells, context)) as finished_models:
        for finished in finished_models:
            strategy, seed = finished.cell
            working = log.model(strategy.label, seed, live=executor is executors.local)  # local: it trains as its rows are read
            fresh = []
            if finished.error is not None:
                finished.rows = lost_model_rows(planned, strategy, seed, done, finished.error)
            for row in finished.rows:
                row |= {"majority_acc": majority}
                results.append_row(config.out, row)
                fresh.append(row)
                if row["status"] != "ok":
                    failed.append(row)
            rows = results.latest(results.read_rows(config.out))
            done_rows = [r for r in rows if r["strategy"] == strategy.label and r["seed"] == seed]
            log.model_done(working, _summary_line(strategy.label, seed, done_rows), fresh)
    path = leaderboard.write(config.out, config.leaderboard_dir, config.name, force=config.force, formats=config.formats)
    log.finish(path, results.latest(results.read_rows(config.out)))
    for line in unlearned(config.out, [strategy.label for strategy in strategies]):
        progress.say(line)
    return path, failed


def writable_folder(folder: Path, flag: str) -> None:
    """Create ``folder`` and prove it writable (not a file, not on a read-only mount), or one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RobenchError(f"cannot write to {flag} {folder} ({exc.strerror}): pass a writable folder as {flag}") from None


def unlearned(out: Path, strategies: list[str]) -> list[str]:
    """One line per strategy whose model learned nothing (robench.report.rankable's model checks: not
    above chance, or one class for almost every image), saying what to try: its rows are kept, but
    its robustness means nothing and the page does not rank it."""
    config = results.read_config(out)
    labels, classes = (config.get("attacked") or {}).get("labels"), (config.get("dataset") or {}).get("classes")
    if not labels:
        return []
    frame = results.read_frame(out)
    return [f"{strategy} learned nothing ({why}): it is not ranked; search its recipe with --tune lr,weight_decay "
            "(docs/tuning.md) or train longer (--epochs)"
            for strategy in strategies if (why := rankable.model_problem(frame, np.asarray(labels), classes, strategy))]


def refuse_links(out: Path) -> None:
    """Before anything trains: none of the files and folders a run writes in ``out`` is a symbolic link
    (a linked checkpoints/ or results.jsonl would make it write outside ``out``)."""
    for name in (results.RESULTS_FILE, results.CONFIG_FILE, checkpoints.FOLDER, features.FOLDER, tuning.STORAGE, transfer.FOLDER):
        refuse_link(out / name, "--out")


def _summary_line(label: str, seed: int, rows: list[dict]) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return f"{label} seed {seed}: FAILED ({rows[0]['error'] if rows else 'no rows'})"
    clean = ok[0]
    shifted = [r for r in ok if r.get("attack_family") == CORRUPTION]
    attacked = ", ".join(f"{r['attack']}@{eps_label(r['eps'])} {100 * r['robust_acc']:.1f}%" for r in ok
                         if r["attack"] != CLEAN and r.get("attack_family") != CORRUPTION)
    worst = min(shifted, key=lambda r: r["robust_acc"]) if shifted else None
    failed = len(rows) - len(ok)
    return (f"{label} seed {seed}: clean acc {100 * clean['clean_acc']:.1f}%, balanced {100 * clean['clean_bacc']:.1f}%"
            + (f"; robust {attacked}" if attacked else "")
            + (f"; {len(shifted)} corruption cells, lowest {worst['attack']}@{worst['eps']:g} {100 * worst['robust_acc']:.1f}%"
               if worst else "") + (f"; {failed} cells failed" if failed else ""))
