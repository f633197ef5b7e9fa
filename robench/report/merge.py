"""Several runs read as one: the union of their rows, once they are shown to measure the same thing.

Runs can share a page when a number of one means what the same number of the other means: the
same data, split, test set, attacked images, backbone, weights, image size and precision (the
settings of ``robench.core.comparable.COMPARABLE``, which a resumed run must match too), the same recipe
and plugin version for a strategy both trained, and no model (strategy and seed) in both, since
two different models would pass for one. A merge of runs that differ only in their seeds then
makes the page one run of all the seeds makes. Anything that reads runs (the page, its plots,
its exports, the website) reads them here, one run folder or several alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import pandas as pd

from robench.core.comparable import EXTENDABLE, budget_text, first_difference, merge_configs, show
from robench.core.names import name_from
from robench.core.results import CONFIG_FILE, FORMAT, RESULTS_FILE, read_frame
from robench.errors import RobenchError
from robench.report.summary import _config, attacked_labels, run_name
from robench.report.worst_case import with_worst_case


def run_dirs(runs: Path | str | Sequence[Path | str]) -> list[Path]:
    """One run folder or several, as a list of paths."""
    return [Path(runs)] if isinstance(runs, str | Path) else [Path(run) for run in runs]


def read_runs(runs: Path | str | Sequence[Path | str]) -> tuple[pd.DataFrame, dict]:
    """The rows of one run or of several comparable runs, and their config with ``runs``: per run
    folder its name, path, seeds and creation time (several runs' configs merged as a resumed run's are).

    Several runs are refused in one line naming the setting in which two of them differ, or the
    model both hold. Their rows are ordered by seed, so the order the runs are named in does not
    change the page (the bootstrap draws seeds by position).
    """
    dirs = run_dirs(runs)
    configs, frames = [_config(d) for d in dirs], [read_frame(d) for d in dirs]
    sources = [{"name": run_name(c, d), "dir": str(d), "seeds": c.get("seeds"), "created": c.get("created")}
               for d, c in zip(dirs, configs)]
    if len(dirs) == 1:
        return frames[0], configs[0] | {"runs": sources}
    refuse_incomparable(dirs, configs, frames)
    merged = configs[0]
    for config in configs[1:]:
        merged = merge_configs(_complete(merged), _complete(config))
    frame = pd.concat(frames, ignore_index=True).sort_values("seed", kind="stable", ignore_index=True)
    return frame, merged | {"runs": sources}


def page_name(config: dict) -> str:
    """A page's default name: its run's, or its runs' joined by "-and-" (past three, the first's and a count)."""
    names = [run["name"] for run in config["runs"]]
    if len(names) == 1:
        return names[0]
    return name_from("-and-".join(names) if len(names) <= 3 else f"{names[0]}-and-{len(names) - 1}-more")


def board_frame(runs: Path | str | Sequence[Path | str]) -> tuple[pd.DataFrame, dict]:
    """The attack rows with their worst-case rows added, and the config: what a page's attack tables and
    its plots show (corruption rows, a severity in their eps column, have a section of their own)."""
    from robench.report.corruption_page import split

    frame, config = read_runs(runs)
    return with_worst_case(split(frame)[0], attacked_labels(config)), config


def refuse_incomparable(dirs: Sequence[Path], configs: Sequence[dict], frames: Sequence[pd.DataFrame]) -> None:
    """Raise RobenchError, in one line, unless every pair of runs can share a page."""
    for run_dir, config, frame in zip(dirs, configs, frames):
        if frame.empty:
            raise RobenchError(f"no results in {run_dir / RESULTS_FILE}: pass the --out folder of a run that finished cells")
        if config.get("format") != FORMAT or not isinstance(config.get("comparable"), dict):
            raise RobenchError(f"{run_dir / CONFIG_FILE} does not record the settings a merge compares (written by "
                               f"robench {config.get('robench_version', 'unknown')}): show that run alone, or run it again "
                               "with this robench")
    for (a, config_a, frame_a), (b, config_b, frame_b) in combinations(zip(dirs, configs, frames), 2):
        reason = why_not_comparable(config_a, config_b) or _shared_model(frame_a, frame_b)
        if reason:
            raise RobenchError(f"cannot merge {a} and {b}: {reason}")


def why_not_comparable(a: dict, b: dict) -> str | None:
    """Why two runs' configs cannot share a page, in words naming the setting and both values; None if they can."""
    found = first_difference(a["comparable"], b["comparable"])
    if found:
        kind, name, value_a, value_b = found
        if kind == "setting":
            return f"{name} {show(value_a)} vs {show(value_b)}: their numbers would not be comparable"
        if kind == "plugin":
            return f"{name} from {value_a} vs {value_b}: rows of two versions would be mixed"
        diff = ", ".join(f"{key} {value_a[key]} vs {value_b[key]}" for key in value_b)
        return f"strategy {name!r} trained with another recipe ({diff}): its seeds would come from two recipes"
    if budget_text(a.get("tuning")) != budget_text(b.get("tuning")):
        return (f"--tune-budget {budget_text(a.get('tuning'))} vs {budget_text(b.get('tuning'))}: their strategies "
                "were not given the same search")
    if a.get("attacked") != b.get("attacked"):
        return "they attacked other test images (config.json's attacked ids and labels)"
    return None


def _shared_model(a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    both = sorted(set(zip(a["strategy"], a["seed"])) & set(zip(b["strategy"], b["seed"])))
    if both:
        strategy, seed = both[0]
        return (f"both hold strategy {strategy!r} seed {seed}, two models that would count as one: "
                "merge runs of other seeds or strategies")
    return None


def _complete(config: dict) -> dict:
    """A config with every list a merge joins and a command, for runs that left one out."""
    return config | {key: config.get(key) or [] for key in EXTENDABLE} | {"command": config.get("command") or ""}
