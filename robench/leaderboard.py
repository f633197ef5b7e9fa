"""The leaderboard: one markdown page per run, read from its results.jsonl and config.json.

Two steps, kept apart so that plots and sanity-check flags reuse the numbers without the
formatting: ``summarise`` turns rows into a tidy frame of mean, std and seed count per
(strategy, attack, eps, metric); ``render`` turns that frame and the config into markdown.

The page always shows accuracy next to balanced accuracy, the majority-class baseline and
chance, because accuracy alone hides a model that answers the majority class every time; and it
shows both robustness protocols, each with its denominator, because they differ by a factor
of clean accuracy and are easily confused (see FIELD_NOTES.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from robench.metrics import eps_label
from robench import flags, minimal_eps, per_class, uncertainty
from robench.worst_case import WORST, with_worst_case
from robench.defense import NONE, combined_label
from robench.errors import RobenchError
from robench.results import CELL_METRICS, CONFIG_FILE, MODEL_METRICS, RESULTS_FILE, read_config, read_frame

LEADERBOARD_FILE = "leaderboard.md"
UNKNOWN = "unknown"
MISSING_CELL = "—"
CLEAN = "none"  # the attack label of clean metrics, as in the results file


@dataclass(frozen=True)
class Protocol:
    """How a robust accuracy is counted; the page names it and its denominator every time."""

    metric: str
    title: str
    denominator: str  # may contain {n_test}
    subset_denominator: str  # with --attack-samples; may contain {n} (attacked) and {of} (test images)


PROTOCOLS = {
    "all": Protocol(
        metric="robust_acc",
        title="robust accuracy over all test images (RobustBench protocol)",
        denominator="all {n_test} test images; an image the model got wrong before the attack "
        "counts as a failure, so these columns never exceed clean acc",
        subset_denominator="the {n} attacked test images, a class-stratified subset of the {of}, the same "
        "for every model; an image the model got wrong before the attack counts as a failure, so these "
        "columns never exceed clean acc (attacked), the clean accuracy on those {n}",
    ),
    "correct": Protocol(
        metric="acc_on_correct",
        title="accuracy on the clean-correct subset (the seed study's protocol)",
        denominator="only the test images each model classified correctly before the attack "
        "(n_clean_correct, which differs per model and seed); multiply by clean acc "
        "to compare with the other protocol",
        subset_denominator="only the attacked test images (a class-stratified subset of {n} of the {of}) "
        "that each model classified correctly before the attack (n_clean_correct, which differs per model "
        "and seed); multiply by clean acc (attacked) to compare with the other protocol",
    ),
}
DEFAULT_PROTOCOL = "all"


# ---------------------------------------------------------------- computation


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count per (strategy, attack, eps, metric), failed rows left out.

    Tidy, one statistic per row, so that a caller picks what it needs: the leaderboard one
    protocol, a plot every eps of one attack, a flag the curve of each attack. Model metrics
    (clean accuracy, costs) carry ``attack == "none"`` and a NaN eps. A cell written twice
    (a resumed run) counts once, its last version.
    """
    ok = frame[frame["status"] != "failed"]
    models = ok.groupby(["strategy", "seed"], sort=False, dropna=False)[list(MODEL_METRICS)].first()
    models = models.reset_index().assign(attack=CLEAN, eps=math.nan)
    cell_keys = ["strategy", "seed", "attack", "eps"]
    cells = ok[ok["attack"] != CLEAN].drop_duplicates(cell_keys, keep="last")
    parts = [
        _stats(models, MODEL_METRICS),
        _stats(cells[cell_keys + list(CELL_METRICS)], CELL_METRICS),
    ]
    return pd.concat(parts, ignore_index=True)


def _stats(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    long = table.melt(id_vars=["strategy", "seed", "attack", "eps"], value_vars=list(metrics), var_name="metric")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    grouped = long.groupby(["strategy", "attack", "eps", "metric"], sort=False, dropna=False)["value"]
    stats = grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    return stats[stats["n"] > 0]


# ---------------------------------------------------------------- formatting


def render(
    run_dir: Path,
    notes: Mapping[str, str] | None = None,
    footnotes: Sequence[str] | None = None,
    plots: Sequence[tuple[str, str]] | None = None,
    reference: str | None = None,
) -> str:
    """The markdown leaderboard of one run.

    ``notes`` maps a strategy label to a short marker shown in a last "notes" column, and
    ``footnotes`` are lines printed under the main table. By default both come from the sanity
    checks of ``robench.flags``, so every page carries its flags; pass them to show others.
    ``plots`` are ``(attack, file name)`` pairs of PNGs beside the page (robench.plots), linked.
    ``reference`` is the strategy the paired comparisons test against (default: the run's
    ``--reference``, else each column's best).
    """
    run_dir = Path(run_dir)
    frame = read_frame(run_dir)
    if frame.empty:
        raise RobenchError(f"no results in {run_dir / RESULTS_FILE}: run `robench run --out {run_dir}` first")
    config = _config(run_dir)
    labels = attacked_labels(config)
    protocol_name = config.get("protocol") or DEFAULT_PROTOCOL
    if protocol_name not in PROTOCOLS:
        raise RobenchError(
            f"unknown protocol {protocol_name!r} in {run_dir / CONFIG_FILE}: expected one of {', '.join(PROTOCOLS)}"
        )
    other_name = next(name for name in PROTOCOLS if name != protocol_name)
    if notes is None and footnotes is None:
        classes = config.get("dataset", {}).get("classes")
        notes, footnotes = flags.annotate(flags.check(frame, n_classes=len(classes) if classes else None, labels=labels))
    frame = with_worst_case(frame, labels)
    board = _Board(summarise(frame), frame, config)

    main = board.main_table(PROTOCOLS[protocol_name])
    if labels is not None and (headline := [c for c in board.columns if c[0] == board.columns[0][0]]):
        rank = uncertainty.ranks(frame, labels, board.strategies, headline)
        counts = pd.Series(rank).value_counts()
        main.insert(0, "rank", [f"{rank[s]}=" if counts[rank[s]] > 1 else str(rank[s]) for s in board.strategies])
    if notes:
        main["notes"] = [notes.get(strategy, "") for strategy in board.strategies]
    reference = reference or config.get("reference")
    if reference is not None and reference not in board.strategies:
        raise RobenchError(f"reference strategy {reference!r} is not in this run: use one of {', '.join(board.strategies)}")
    paired = uncertainty.paired_section(
        uncertainty.against_the_best(frame, labels, board.strategies, board.columns, reference) if labels is not None else [],
        board.strategies, board.columns)
    dataset = config.get("dataset", {})
    per_class_text = per_class.section(frame, labels, dataset.get("classes"), board.strategies, board.columns,
                                       dataset.get("malignant") or ())
    sections = [
        f"# robench leaderboard: {run_name(config, run_dir)}",
        _header(config),
        f"## {_sentence(PROTOCOLS[protocol_name].title)}",
        _markdown(main),
        board.legend(PROTOCOLS[protocol_name]),
        *(footnotes or ()),
        *([paired] if paired else []),
        *([minimal_text] if (minimal_text := minimal_eps.section(frame, board.strategies)) else []),
        board.baselines(),
        *([per_class_text] if per_class_text else []),
        *([_plots_section(plots)] if plots else []),
        f"## Other protocol: {PROTOCOLS[other_name].title}",
        _markdown(board.robust_table(PROTOCOLS[other_name])),
        board.denominator(PROTOCOLS[other_name]),
        _failed_section(frame),
    ]
    return "\n\n".join(sections) + "\n"


def write(
    run_dir: Path,
    leaderboard_dir: Path,
    name: str | None = None,
    notes: Mapping[str, str] | None = None,
    footnotes: Sequence[str] | None = None,
    reference: str | None = None,
) -> Path:
    """Write the page to ``<leaderboard_dir>/<name>.md`` and, beside the results, to the run dir,
    each with its accuracy-vs-eps plots ``<name>-<attack>.png`` next to it.

    The copy in the run dir travels with the raw results; the one in ``leaderboard_dir`` sits
    next to other runs' pages. Returns the path of the latter.
    """
    from robench.plots import write_plots  # matplotlib loads only when a page is written

    run_dir = Path(run_dir)
    name = name or run_name(_config(run_dir), run_dir)
    plots = write_plots(run_dir, [Path(leaderboard_dir), run_dir], name)
    text = render(run_dir, notes=notes, footnotes=footnotes, plots=plots, reference=reference)
    path = Path(leaderboard_dir) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (run_dir / LEADERBOARD_FILE).write_text(text)
    _write_per_class(run_dir, [Path(leaderboard_dir), run_dir], name)
    return path


def _write_per_class(run_dir: Path, out_dirs: Sequence[Path], name: str) -> None:
    """``<name>-per-class.csv``: per-class recall for every strategy and attack@eps, beside the page."""
    frame, config = board_frame(run_dir)
    labels, dataset = attacked_labels(config), config.get("dataset", {})
    if labels is None or not dataset.get("classes") or frame.empty:
        return
    board = _Board(summarise(frame), frame, config)
    table = per_class.tidy(frame, labels, dataset["classes"], board.strategies, board.columns,
                           dataset.get("malignant") or ())
    for folder in dict.fromkeys(Path(d).resolve() for d in out_dirs):
        table.round({"clean_recall": 4, "robust_recall": 4, "malignant_to_benign": 4}).to_csv(
            folder / f"{name}-per-class.csv", index=False)


def attacked_labels(config: Mapping) -> list[int] | None:
    """The labels of the attacked images, in the order of the rows' per-image predictions; None
    for a run written before robench kept them (its pages then have no worst-case column)."""
    attacked = config.get("attacked")
    return attacked.get("labels") if isinstance(attacked, Mapping) else None


def board_frame(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    """A run's rows with its worst-case rows added, and its config: what the page and plots show."""
    config = _config(Path(run_dir))
    return with_worst_case(read_frame(Path(run_dir)), attacked_labels(config)), config


def run_name(config: Mapping, run_dir: Path) -> str:
    """The config's name, else the run dir's: old runs may not have written one."""
    return config.get("name") or Path(run_dir).name


def _config(run_dir: Path) -> dict:
    """The run's config, or an empty one for a run too old to have written it."""
    return read_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}


class _Board:
    """The summary of one run, looked up by cell and formatted as table cells."""

    def __init__(self, summary: pd.DataFrame, frame: pd.DataFrame, config: Mapping):
        self.stats = {
            (row.strategy, row.attack, None if pd.isna(row.eps) else row.eps, row.metric): row
            for row in summary.itertuples(index=False)
        }
        self.strategies = ranked(_ordered(frame["strategy"].dropna(), model_order(config)), summary)
        self.columns = _attack_columns(frame, [WORST, *(config.get("attacks") or ())])
        seeds = config.get("seeds")
        self.expected_n = len(seeds) if seeds else int(summary["n"].max()) if len(summary) else 1
        self.config = config
        self.frame, self.labels = frame, attacked_labels(config)

    def cell(self, strategy: str, metric: str, attack: str = CLEAN, eps=None, scale=100.0, digits=2) -> str:
        """``mean ± std`` over seeds, the std left out for one seed, ``(n=k)`` when seeds are missing."""
        stat = self.stats.get((strategy, attack, eps, metric))
        if stat is None:
            return MISSING_CELL
        text = f"{stat.mean * scale:.{digits}f}"
        if stat.n > 1:
            text += f" ± {stat.std * scale:.{digits}f}"
        if stat.n < self.expected_n:
            text += f" (n={stat.n})"
        return text

    def robust_table(self, protocol: Protocol) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "strategy": self.strategies,
                **{
                    f"{attack}@{eps_label(eps)}": [self.robust_cell(s, protocol.metric, attack, eps) for s in self.strategies]
                    for attack, eps in self.columns
                },
            }
        )

    def robust_cell(self, strategy: str, metric: str, attack: str, eps: float) -> str:
        """Robust accuracy over all attacked images with its 95% interval (robench.uncertainty) where
        the rows carry per-image records; ``mean ± std`` otherwise and for the other protocol."""
        by_seed = (uncertainty.survival_by_seed(self.frame, self.labels, strategy, attack, eps)
                   if metric == "robust_acc" and self.labels is not None else {})
        stat = self.stats.get((strategy, attack, eps, metric))
        if not by_seed or stat is None or len({len(v) for v in by_seed.values()}) != 1:
            return self.cell(strategy, metric, attack, eps)
        low, high = uncertainty.interval(by_seed)
        return (f"{100 * stat.mean:.2f} [{100 * low:.1f}, {100 * high:.1f}]"
                + (f" (n={stat.n})" if stat.n < self.expected_n else ""))

    def main_table(self, protocol: Protocol) -> pd.DataFrame:
        table = self.robust_table(protocol)
        table.insert(1, "clean acc", [self.cell(s, "clean_acc") for s in self.strategies])
        table.insert(2, "balanced acc", [self.cell(s, "clean_bacc") for s in self.strategies])
        if self.config.get("attack_samples"):
            table.insert(3, "clean acc (attacked)", [self.cell(s, "attack_clean_acc") for s in self.strategies])
        table["trainable params"] = [self._params(s) for s in self.strategies]
        table["s/epoch"] = [self.cell(s, "seconds_per_epoch", scale=1, digits=1) for s in self.strategies]
        table["train s"] = [self.cell(s, "train_seconds", scale=1, digits=0) for s in self.strategies]
        table["peak MiB"] = [self.cell(s, "peak_mem_mb", scale=1, digits=0) for s in self.strategies]
        return table

    def _params(self, strategy: str) -> str:
        """Count and share of the backbone: the cost axis of parameter-efficient fine-tuning."""
        trainable = self.stats.get((strategy, CLEAN, None, "trainable_params"))
        if trainable is None:
            return MISSING_CELL
        backbone = self.stats.get((strategy, CLEAN, None, "backbone_params"))
        text = human_count(trainable.mean)
        if backbone is not None and backbone.mean > 0:
            text += f" ({100 * trainable.mean / backbone.mean:.3g}%)"
        return text

    def _n_test(self) -> str:
        """The test set size the rows were evaluated on, else the one the split promised."""
        values = [stat.mean for key, stat in self.stats.items() if key[3] == "n_test"]
        return str(int(values[0]) if values else self.config.get("split", {}).get("n_test", UNKNOWN))

    def denominator(self, protocol: Protocol) -> str:
        subset = self.config.get("attack_samples")
        if subset:
            return f"Denominator: {protocol.subset_denominator.format(n=subset['n'], of=subset['of'])}."
        return f"Denominator: {protocol.denominator.format(n_test=self._n_test())}."

    def legend(self, protocol: Protocol) -> str:
        return (
            f"Accuracies in %, mean ± sample std over the run's {self.expected_n} seed(s); "
            + ("robust accuracies over all attacked images as mean [95% interval] over seeds and images "
               "(a two-level bootstrap, docs/protocol.md); " if self.labels is not None else "") +
            f"`(n=k)` marks a cell with only k of them. Attack columns (`attack@eps`, eps in [0, 1] "
            f"pixel units): {protocol.title}. {self.denominator(protocol)} "
            + (f"`{WORST}@eps`: an image counts as robust only if it survives every attack run at that eps "
               f"(per image, not the minimum of the columns); rows are ranked by it, averaged over eps. "
               if any(attack == WORST for attack, _ in self.columns) else "")
            + ("`rank`: 1 + the number of strategies a paired test (McNemar, per seed, combined over seeds, Holm over "
               "all pairs) shows to be more robust under the first attack column's attack at every eps; `=` marks "
               "strategies no test separates, a tie however their means differ. " if self.labels is not None else "") +
            f"Peak MiB: memory while the model trained: the CUDA allocator's peak on a GPU, "
            f"the process's resident memory (sampled) on a CPU."
        )

    def baselines(self) -> str:
        """Majority class and chance, the numbers a collapsed model sits on."""
        majority = {stat.mean for key, stat in self.stats.items() if key[3] == "majority_acc"}
        if not majority:
            majority_text = UNKNOWN
        elif len(majority) == 1:
            majority_text = f"{100 * majority.pop():.2f}% accuracy"
        else:
            majority_text = f"{100 * min(majority):.2f}% to {100 * max(majority):.2f}% accuracy"
        classes = self.config.get("dataset", {}).get("classes")
        chance = f"1/{len(classes)} = {100 / len(classes):.2f}%" if classes else UNKNOWN
        return (
            "Baselines (a model near both has collapsed to one class):\n"
            f"- majority class (always answering the training split's most frequent class): {majority_text}\n"
            f"- chance balanced accuracy (also the majority class's): {chance}"
        )


def ranked(strategies: list[str], summary: pd.DataFrame) -> list[str]:
    """Best first by the headline number: worst-case robust accuracy over all attacked images,
    averaged over the run's eps (each eps's mean over seeds); models without it keep their order
    after the others. Ties keep the command's order."""
    worst = summary[(summary["attack"] == WORST) & (summary["metric"] == "robust_acc")]
    score = worst.groupby("strategy")["mean"].mean().to_dict()
    return sorted(strategies, key=lambda s: -score[s] if s in score else float("inf"))


def model_order(config: Mapping) -> list[str]:
    """The row labels in the command's order: each strategy, then it under each defense."""
    return [combined_label(strategy, defense)
            for strategy in config.get("strategies") or () for defense in config.get("defenses") or (NONE,)]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ordered(values: pd.Series, preferred: Sequence) -> list:
    """``preferred`` first (those present), then the rest in order of first appearance."""
    present = list(dict.fromkeys(values))
    return [v for v in preferred if v in present] + [v for v in present if v not in preferred]


def _attack_columns(frame: pd.DataFrame, attack_order: Sequence[str]) -> list[tuple[str, float]]:
    """(attack, eps) pairs of every attacked row, failed ones too so that their column shows."""
    attacked = frame[(frame["attack"] != CLEAN) & frame["attack"].notna() & frame["eps"].notna()]
    attacks = _ordered(attacked["attack"], attack_order)
    return [
        (attack, float(eps))
        for attack in attacks
        for eps in sorted(attacked.loc[attacked["attack"] == attack, "eps"].unique())
    ]


def human_count(value: float) -> str:
    """5524999 -> 5.5M, 1792 -> 1.8k: a parameter count as people say it."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return f"{value:.0f}"


def _header(config: Mapping) -> str:
    """What a reader needs to trust or reproduce the numbers, as a markdown list."""

    def get(*keys):
        value = config
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return UNKNOWN if value is None else value

    def join(values):
        return UNKNOWN if values == UNKNOWN else ", ".join(str(v) for v in values)

    sha = get("backbone", "weights_sha256")
    versions = {"robench": config.get("robench_version"), **(config.get("versions") or {})}
    version_text = ", ".join(
        f"{package} {versions.get(package) or UNKNOWN}"
        for package in ("robench", "torch", "timm", "torchattacks", "peft", "python")
    )
    params = get("backbone", "params")
    lines = [
        f"- **dataset**: {get('dataset', 'name')}: {get('dataset', 'description')}",
        f"- **split**: seed {get('split', 'seed')}, fingerprint `{get('split', 'fingerprint')}`, "
        f"{get('split', 'n_train')} train / {get('split', 'n_val')} val / {get('split', 'n_test')} test; "
        f"test set: {get('split', 'test_set')}",
        f"- **backbone**: {get('backbone', 'name')} "
        f"({params if params == UNKNOWN else human_count(params)} params), "
        f"weights `{get('backbone', 'weights')}` (sha256 {sha if sha == UNKNOWN else sha[:12]}), "
        f"image size {get('backbone', 'image_size')}",
        f"- **seeds**: {join(get('seeds'))}",
        f"- **versions**: {version_text}",
        f"- **device**: {get('device')}",
        f"- **precision**: training {get('precision', 'train')}, attacks {get('precision', 'attack')}"
        + (" (bf16: autocast, weights fp32)" if "bf16" in (get("precision", "train"), get("precision", "attack")) else ""),
        f"- **created**: {get('created')}",
        f"- **protocol**: {config.get('protocol') or DEFAULT_PROTOCOL}",
    ]
    defenses = [defense for defense in config.get("defenses") or () if defense != NONE]
    if defenses:
        lines.append(f"- **defenses** (adversarial training; a row `strategy + defense` trained under it): {', '.join(defenses)}")
    subset = config.get("attack_samples")
    if subset:
        lines.append(f"- **attacks**: on a class-stratified subset of {subset['n']} of {subset['of']} test images, "
                     f"the same for every strategy and seed; clean acc and balanced acc use all {subset['of']}")
    return "\n".join(lines) + f"\n\nCommand:\n\n```\n{get('command')}\n```"


def _plots_section(plots: Sequence[tuple[str, str]]) -> str:
    """Each PNG embedded by a link relative to the page, which is written next to them."""
    images = "\n\n".join(f"![{attack}: accuracy vs eps]({quote(file)})" if attack != "confusion" else
                         f"Confusion matrices under the first attack column at its smallest eps (true class × "
                         f"prediction after the attack, counts over seeds):\n\n![confusion under attack]({quote(file)})"
                         for attack, file in plots)
    return (
        "## Accuracy vs eps\n\n"
        "One plot per attack under the headline protocol; eps = 0 is the clean model, the band is "
        f"± 1 sample std over seeds. A curve that rises with eps points at a weak or masked attack.\n\n{images}"
    )


def _failed_section(frame: pd.DataFrame) -> str:
    """Failed cells are shown, not averaged: a missing number must not look like a result."""
    failed = frame[frame["status"] == "failed"]
    if failed.empty:
        return "## Failed cells\n\nNone."
    table = failed[["strategy", "seed", "attack", "eps", "error"]].astype(object).fillna("")
    return "## Failed cells\n\n" + _markdown(table)


def _markdown(table: pd.DataFrame) -> str:
    # Cells are already formatted; number parsing would turn "70.00" into "70".
    return table.to_markdown(index=False, disable_numparse=True)
