"""``--tune``: each strategy's recipe searched on the validation split, the same budget for every strategy.

Why: a comparison of fine-tuning strategies measures their recipes as much as the methods
(Bouthillier et al., MLSys 2021); the study robench starts from compared a collapsed full
fine-tuning with a working VPT. So each strategy gets the same search: ``--tune-budget`` trials
of as many epochs each, Optuna's TPE sampler (seeded by the split seed) proposing values in the
ranges the strategy declares next to its recipe (``Strategy.search_space``, robench.strategy),
and a successive-halving pruner stopping trials that fall behind. A trial trains a model of the
run's first seed and reports its validation balanced accuracy after every epoch; its value is
the best epoch's, the number that also picks the epoch a model keeps. The test split is never read.

The study is kept in ``<out>/tuning.db``, Optuna's SQLite storage: a run interrupted during a
search continues it on resume, its finished trials kept. The chosen values override the recipe
of every seed's model, so they enter the checkpoint key, config.json (``tuning``) and the page.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from robench.errors import RobenchError
from robench.pipeline.executors import local
from robench.strategy import TUNABLE, SearchRange

STORAGE = "tuning.db"
FINISHED = ("COMPLETE", "PRUNED")


@dataclasses.dataclass(frozen=True)
class Budget:
    """What every strategy's search may spend: ``trials`` trainings of at most ``epochs`` epochs."""

    trials: int
    epochs: int

    def __str__(self) -> str:
        return f"{self.trials}x{self.epochs}"


DEFAULT_BUDGET = Budget(12, 2)  # at most 24 epochs: 2.4 trainings of a 10-epoch recipe before pruning


def parse_budget(text: str) -> Budget:
    """``--tune-budget TRIALSxEPOCHS`` (``12x2``), both at least 1, or one line saying so."""
    trials, sep, epochs = str(text).lower().partition("x")
    try:
        budget = Budget(int(trials), int(epochs)) if sep else None
    except ValueError:
        budget = None
    if budget is None or budget.trials < 1 or budget.epochs < 1:
        raise RobenchError(f"--tune-budget {text!r} is not TRIALSxEPOCHS with both at least 1: write e.g. 12x2 "
                           "(12 trials of at most 2 epochs each, for every strategy)")
    return budget


def parse_tune(text: str) -> dict[str, SearchRange | None]:
    """``--tune lr,weight_decay`` (each strategy's declared range) or ``lr=1e-5:1e-2`` (this range, log scale)."""
    wanted: dict[str, SearchRange | None] = {}
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        name, _, bounds = part.partition("=")
        low, colon, high = bounds.partition(":")
        try:
            if bounds and not colon:
                raise ValueError("a range is LOW:HIGH")
            wanted[name.strip()] = SearchRange(float(low), float(high)) if bounds else None
        except ValueError as exc:
            raise RobenchError(f"--tune {part!r}: {exc}: write NAME or NAME=LOW:HIGH, e.g. lr=1e-5:1e-2") from None
    if not wanted:
        raise RobenchError("--tune names no recipe field: write e.g. --tune lr or --tune lr,weight_decay")
    return wanted


def check(strategies: list, wanted: dict[str, SearchRange | None]) -> None:
    """Before anything trains: every field searched is a number of the recipe, and every strategy declares a
    range for it (or one is given)."""
    for name in wanted:
        if name not in TUNABLE:
            raise RobenchError(f"--tune {name}: not a recipe field --tune can search: name one of {', '.join(TUNABLE)}")
    for strategy in strategies:
        declared = strategy.plugin.search_space
        if not declared and any(r is None for r in wanted.values()):
            raise RobenchError(f"strategy {strategy.label!r} declares no search space, so --tune cannot search it: give "
                               "ranges (--tune lr=1e-5:1e-2) or drop --tune")
        for name, given in wanted.items():
            if given is None and name not in declared:
                raise RobenchError(f"--tune {name}: strategy {strategy.label!r} declares no range for {name}; it searches "
                                   f"{', '.join(declared) or 'nothing'}: name one of those or give a range ({name}=LOW:HIGH)")


def ranges(strategy, wanted: dict[str, SearchRange | None]) -> dict[str, SearchRange]:
    """The range searched per field: the one given, else the strategy's, scaled to its batch size where
    the strategy declares it per 256 images (VPT's rule)."""
    found = {}
    for name, given in wanted.items():
        declared = given or strategy.plugin.search_space[name]
        found[name] = declared.for_batch(strategy.recipe.batch_size)
    return found


def tune(plan, prepared, train_trial, executor=local, callbacks=()) -> tuple:
    """Search each strategy's recipe; return the plan (robench.pipeline.plan.Plan, which imports this
    module for its Budget) with the chosen recipes, and config.json's record.

    ``train_trial(plan, strategy, seed, prepared, on_epoch)`` trains one trial's model (robench's
    model job without its checkpoint); ``on_epoch(epoch, val_bacc)`` may raise optuna.TrialPruned.
    The trials run through ``executor`` (robench.pipeline.executors), as the models do: one after
    another here, or side by side on Ray, each reading and writing the study in the SQLite file.
    """
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    config = plan.config
    if len(prepared.split.val) == 0:
        raise RobenchError("--tune searches on the validation split and this dataset's split has none: "
                           "use a dataset with a validation split or drop --tune")
    url = f"sqlite:///{Path(config.out) / STORAGE}"
    # Optuna's TPE draws its first 10 trials at random; a budget of 12 would then model only 2.
    startup = max(1, config.tune_budget.trials // 2)
    chosen, record = [], {}
    for strategy in plan.strategies:
        space = ranges(strategy, config.tune)
        name = f"{strategy.label} {_space_text(space)} budget {config.tune_budget}"
        study = optuna.create_study(study_name=name, storage=_storage(url), load_if_exists=True, direction="maximize")
        left = config.tune_budget.trials - sum(t.state.name in FINISHED for t in study.trials)
        context = {"plan": plan, "strategy": strategy, "space": space, "prepared": prepared, "train_trial": train_trial,
                   "study_name": name, "url": url, "startup": startup, "callbacks": tuple(callbacks)}
        for finished in executor(run_trial, [(len(study.trials) + k,) for k in range(max(left, 0))], context):
            list(finished.rows)  # the local executor runs the trial as its rows are read
            if finished.error is not None:
                raise finished.error
        study = optuna.load_study(study_name=name, storage=_storage(url))  # with the trials other processes ran
        best = study.best_trial
        recipe = strategy.recipe.override(**best.params)
        chosen.append(dataclasses.replace(strategy, recipe=recipe))
        record[strategy.label] = {
            "chosen": best.params, "value": best.value, "objective": "validation balanced accuracy, best epoch",
            "ranges": {name: dataclasses.asdict(r) for name, r in space.items()},
            "trials": [{"number": t.number, "params": t.params, "value": t.value, "state": t.state.name,
                        "epochs": len(t.intermediate_values)} for t in study.trials if t.state.name in FINISHED],
        }
    summary = {"budget": {"trials": config.tune_budget.trials, "epochs": config.tune_budget.epochs},
               "sampler": f"TPE after {startup} random trials", "pruner": "successive halving", "seed": config.seeds[0],
               "strategies": record}
    # a transfer attack's surrogate is the tuned model where it is one of the run's, as every other cell sees it
    tuned = {strategy.label: strategy for strategy in chosen}
    surrogates = {attack: tuned.get(source.label, source) for attack, source in plan.surrogates.items()}
    return plan._replace(strategies=chosen, surrogates=surrogates), summary


def run_trial(number: int, *, plan, strategy, space, prepared, train_trial, study_name: str, url: str, startup: int,
              callbacks: tuple) -> list:
    """One trial of a strategy's study, wherever the executor runs it: the study is read from and
    written to its SQLite file, so trials in other processes see each other's results and the
    pruner compares with them. ``number``: the trial's place in the study, which seeds the sampler
    (a sampler seeded alike in every process would propose the same values to each)."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=prepared.split.seed * 100_003 + number, n_startup_trials=startup)
    study = optuna.load_study(study_name=study_name, storage=_storage(url), sampler=sampler,
                              pruner=optuna.pruners.SuccessiveHalvingPruner())
    study.optimize(_objective(plan, strategy, space, prepared, train_trial), n_trials=1, callbacks=list(callbacks), catch=())
    return []


def _storage(url: str):
    import optuna

    # trials on Ray write one file at once: wait for the lock rather than fail after SQLite's 5 s
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def _objective(plan, strategy, space: dict[str, SearchRange], prepared, train_trial):
    import optuna

    def objective(trial: optuna.Trial) -> float:
        values = {name: trial.suggest_float(name, r.low, r.high, log=r.log) for name, r in space.items()}
        candidate = dataclasses.replace(strategy, recipe=strategy.recipe.override(**values, epochs=plan.config.tune_budget.epochs))
        seen = []

        def on_epoch(epoch: int, val_bacc: float) -> None:
            seen.append(val_bacc)
            trial.report(val_bacc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        train_trial(plan, candidate, plan.config.seeds[0], prepared, on_epoch)
        return max(seen)

    return objective


def _space_text(space: dict[str, SearchRange]) -> str:
    return ",".join(f"{name}={r.low:g}:{r.high:g}{'' if r.log else ':linear'}" for name, r in sorted(space.items()))
