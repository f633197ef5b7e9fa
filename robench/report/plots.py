"""Accuracy-vs-eps plots of a run: one PNG per attack, one line per strategy, written beside
the leaderboard page that links them.

One attack per figure, so one norm per axis: an L2 attack's eps and an L-inf attack's are radii of
different balls and never share an axis; each figure names its norm in its title and eps axis.

A table shows a few eps; a curve shows its shape. The curve starts at eps = 0 (the clean
model), so a drop is read against where the model started, and a curve that rises with eps,
the mark of a weak or masked attack (FIELD_NOTES.md), is seen at a glance. The numbers are
the leaderboard's own (``leaderboard.summarise``): mean over seeds, band of one sample std.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global backend switch), so plotting works on a headless server and inside a notebook alike.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robench.attack import CLEAN
from robench.core.atomic import replacing
from robench.core.metrics import eps_label
from robench.core.names import file_in
from robench.report import confusion, minimal_eps, reliability
from robench.report.merge import board_frame, page_name
from robench.report.panels import DPI
from robench.report.summary import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    Protocol,
    _attack_columns,
    _ordered,
    _sentence,
    model_order,
    summarise,
)
from robench.report.worst_case import WORST_LABELS, norm_of

CONFUSION = "confusion"  # the first element of the confusion plot's pair in write_plots' result
CONFUSION_KEY = "\0confusion"  # its file's key among the attacks' (no attack label holds a NUL): <name>-confusion.png
RELIABILITY = "reliability"  # the reliability figure's pair (robench.report.reliability)
RELIABILITY_KEY = "\0reliability"  # <name>-reliability.png
CAPTIONS = {  # the page's text for the figures that are not an attack's curve (robench.report.leaderboard)
    CONFUSION: "Confusion matrices under the first attack column at its smallest eps (true class × prediction after "
               "the attack, counts over seeds):\n\n![confusion under attack]({file})",
    RELIABILITY: "Reliability diagrams on the clean test images (accuracy per confidence bin against the diagonal of "
                 "perfect calibration, the images of every seed pooled; the Calibration section has the ECE):\n\n"
                 "![reliability on clean images]({file})",
}
Y_LABELS = {"all": "robust accuracy, all test images (%)", "correct": "accuracy on clean-correct images (%)"}
SYMBOLS = {"Linf": "L∞", "L2": "L2"}  # how an axis names a norm (robench.attack.NORMS)


def file_name(name: str, attack: str) -> str:
    """``("t", "pgd(steps=20)")`` -> ``"t-pgd-steps-20.png"``: safe in a file system and a link."""
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", attack, flags=re.ASCII).strip("-") or "attack"
    return f"{name}-{slug}.png"


def file_names(name: str, labels: Sequence[str]) -> dict[str, str]:
    """label -> its PNG, one file per label: labels whose slugs collide (``pgd(steps=2)`` and
    ``pgd(steps=２)``, a full-width digit) each get a short hash of the label, so that no plot
    replaces another's."""
    plain = {label: file_name(name, label) for label in labels}
    shared = {file for file, n in Counter(plain.values()).items() if n > 1}
    return {label: file.removesuffix(".png") + f"-{hashlib.sha256(label.encode()).hexdigest()[:8]}.png" if file in shared
            else file for label, file in plain.items()}


def curves(summary: pd.DataFrame, attack: str, protocol: Protocol) -> pd.DataFrame:
    """The points of one attack's plot: strategy, eps, mean, std, n; eps 0 is the clean model.

    The clean point is clean accuracy over all test images, or 1.0 under the clean-correct
    protocol, whose denominator is by definition the images the clean model got right. An
    attacked eps = 0 cell, when the run has one, is kept instead: it must equal the clean
    point, and a plot should show it if it does not.
    """
    attacked = summary[(summary["attack"] == attack) & (summary["metric"] == protocol.metric)]
    clean = summary[(summary["attack"] == CLEAN) & (summary["metric"] == "clean_acc")]
    if protocol.metric != "robust_acc":
        clean = clean.assign(mean=1.0, std=0.0)
    clean = clean[~clean["strategy"].isin(attacked.loc[attacked["eps"] == 0, "strategy"])].assign(eps=0.0)
    columns = ["strategy", "eps", "mean", "std", "n"]
    points = pd.concat([clean[columns], attacked[columns]], ignore_index=True)
    return points.sort_values(["strategy", "eps"], kind="stable").reset_index(drop=True)


def figure(
    points: pd.DataFrame,
    strategies: Sequence[str],
    attack: str,
    protocol_name: str,
    config: Mapping,
    clean: Mapping[str, tuple[float, float]],
    majority: float | None = None,
    continuous: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    norm: str = "Linf",
) -> Figure:
    """One attack's plot. ``clean`` maps a strategy to its (clean acc, balanced acc) for the legend;
    ``continuous`` maps a strategy to a minimal attack's whole curve (eps, accuracy), drawn as a
    thin line beside its fixed-eps points; ``norm`` is the attack's, named on the eps axis and title."""
    symbol = SYMBOLS.get(norm, norm)
    fig = Figure(figsize=(8, 6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(strategies))]
    for strategy, color in zip(strategies, colors):
        line = points[points["strategy"] == strategy]
        if line.empty:
            continue
        x, mean, std = line["eps"].to_numpy(), 100 * line["mean"].to_numpy(), 100 * line["std"].fillna(0).to_numpy()
        label = strategy
        if strategy in clean:
            acc, bacc = clean[strategy]
            label += f" (clean {100 * acc:.1f}%, balanced {100 * bacc:.1f}%)"
        ax.plot(x, mean, marker="o", linestyle="none" if continuous and strategy in continuous else "-",
                color=color, label=label)
        if continuous and strategy in continuous:
            grid, accuracy = continuous[strategy]
            ax.plot(grid, 100 * accuracy, color=color, linewidth=1.2)
        if (std > 0).any():
            ax.fill_between(x, (mean - std).clip(0, 100), (mean + std).clip(0, 100), color=color, alpha=0.2, linewidth=0)
    if majority is not None and protocol_name == "all":
        ax.axhline(100 * majority, color="0.4", linestyle="--", linewidth=1,
                   label=f"majority class always ({100 * majority:.1f}%)")

    eps_values = sorted(points["eps"].unique())
    positive = [eps for eps in eps_values if eps > 0]
    if positive and positive[-1] / positive[0] >= 8:  # 0.5/255 to 0.02: a linear axis piles the small eps up
        ax.set_xscale("symlog", linthresh=positive[0], linscale=0.5)
        ax.set_xlabel(f"eps ({symbol} radius in [0, 1] pixel units, symlog axis: linear up to the smallest eps)")
    if continuous and positive:  # beyond the fixed eps, only as far as the curves still move
        settled = max(_settled(grid, accuracy) for grid, accuracy in continuous.values())
        ax.set_xlim(-positive[0] / 4, max(positive[-1], settled) * 1.1)
    if len(eps_values) <= 8:
        ax.set_xticks(eps_values, [eps_label(eps) for eps in eps_values])
    # a secondary axis would not follow the symlog scale (the ticks say k/255 then); in L2, eps x 255 is no pixel level
    if ax.get_xscale() == "linear" and norm == "Linf":
        ax.secondary_xaxis("top", functions=(lambda e: e * 255, lambda k: k / 255)).set_xlabel("eps × 255")
    if ax.get_xscale() == "linear":
        ax.set_xlabel(f"eps ({symbol} radius, in [0, 1] pixel units; 0 = clean)")
    ax.set_ylabel(Y_LABELS[protocol_name])
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    seeds = config.get("seeds")
    spread = f"mean over {len(seeds)} seeds, band ± 1 sample std" if seeds and len(seeds) > 1 else "one seed"
    ax.set_title(f"{_sentence(PROTOCOLS[protocol_name].title)}; {spread}", fontsize=9)
    named = attack if attack.endswith(f"({norm})") else f"{attack} ({symbol})"  # "worst case (L2)" names it already
    fig.suptitle(f"{named} on {_subject(config)}", fontsize=12)
    longest = max(map(len, ax.get_legend_handles_labels()[1]), default=0)  # e.g. "vpt_deep + pgd_at(eps=0.01) (clean ...)"
    fig.legend(loc="outside lower center", ncols=2 if len(strategies) > 2 and longest <= 45 else 1, fontsize=8)
    return fig


def write_plots(runs: Path | Sequence[Path], out_dirs: Sequence[Path], name: str | None = None) -> list[tuple[str, str]]:
    """Draw every attack's plot into the first of ``out_dirs`` and copy it to the others.

    Returns ``(attack, file name)`` pairs in the leaderboard's attack order; none, and nothing
    written, for a run without attacked cells or with a config the leaderboard refuses. Every text
    from the run (a class, strategy or attack label) is drawn as text: a ``$`` never starts
    matplotlib's mathtext, whose parse errors would leave a run without a page.
    """
    with rc_context({"text.parse_math": False}):
        return _write_plots(runs, out_dirs, name)


def _write_plots(runs, out_dirs, name) -> list[tuple[str, str]]:
    frame, config = board_frame(runs)  # one run, or several merged (robench.report.merge)
    name = name or page_name(config)
    protocol_name = config.get("protocol") or DEFAULT_PROTOCOL
    protocol = PROTOCOLS.get(protocol_name)
    if frame.empty or protocol is None:
        return []
    summary = summarise(frame)
    strategies = _ordered(frame["strategy"].dropna(), model_order(config))
    columns = _attack_columns(frame, [*WORST_LABELS, *(config.get("attacks") or ())])
    attacks = list(dict.fromkeys(attack for attack, _ in columns))
    clean = _clean_accuracies(summary)
    majority = summary.loc[summary["metric"] == "majority_acc", "mean"]
    written, files = [], file_names(name, [*attacks, CONFUSION_KEY, RELIABILITY_KEY])
    for attack in attacks:
        fig = figure(curves(summary, attack, protocol), strategies, attack, protocol_name, config, clean,
                     majority=float(majority.iloc[0]) if len(majority) else None,
                     continuous=_minimal_curves(frame, strategies, attack, protocol_name), norm=norm_of(frame, attack))
        _save(fig, files[attack], out_dirs)
        written.append((attack, files[attack]))
    written.extend(_confusion_plot(frame, config, strategies, attacks, files[CONFUSION_KEY], out_dirs))
    if (fig := reliability.figure(frame, strategies, _subject(config))) is not None:
        _save(fig, files[RELIABILITY_KEY], out_dirs)
        written.append((RELIABILITY, files[RELIABILITY_KEY]))
    return written


def _confusion_plot(frame, config, strategies, attacks, file, out_dirs) -> list[tuple[str, str]]:
    """The confusion matrices under the headline attack at its smallest eps, as ``("confusion", file)``."""
    labels, classes = (config.get("attacked") or {}).get("labels"), (config.get("dataset") or {}).get("classes")
    eps_values = sorted(frame.loc[(frame["attack"] == attacks[0]) & (frame["eps"] > 0), "eps"].unique()) if attacks else []
    if not labels or not classes or not eps_values:
        return []
    fig = confusion.figure(frame, labels, classes, strategies, attacks[0], float(eps_values[0]), _subject(config))
    if fig is None:
        return []
    _save(fig, file, out_dirs)
    return [(CONFUSION, file)]


def _save(fig, file: str, out_dirs) -> None:
    """Each PNG written whole or not at all (robench.core.atomic): a full disk leaves no half image;
    always directly inside its folder (robench.core.names.file_in)."""
    first, *others = [Path(d) for d in out_dirs]
    with replacing(file_in(first, file)) as partial:
        fig.savefig(partial, format="png")
    for other in others:
        if other.resolve() != first.resolve():
            with replacing(file_in(other, file)) as partial:
                shutil.copyfile(first / file, partial)


def _settled(grid: np.ndarray, accuracy: np.ndarray) -> float:
    """The eps from which a curve stays at its last value."""
    moving = np.flatnonzero(accuracy != accuracy[-1])
    return float(grid[min(moving[-1] + 1, len(grid) - 1)]) if len(moving) else float(grid[0])


def _minimal_curves(frame: pd.DataFrame, strategies, attack: str, protocol_name: str) -> dict:
    """Per strategy, a minimal attack's robust accuracy on a fine eps grid up to eps_max, from its
    records: share of images with eps* > eps (over the clean-correct ones, eps* > 0, under that protocol)."""
    if attack not in minimal_eps.minimal_attacks(frame):
        return {}
    out = {}
    for strategy in strategies:
        found = minimal_eps.eps_star(frame, strategy, attack)
        if found is None:
            continue
        matrix, eps_max = found
        grid = np.linspace(0, eps_max, 400)
        if protocol_name == "all":
            out[strategy] = grid, minimal_eps.curve(matrix, grid)
        else:
            out[strategy] = grid, np.mean([minimal_eps.curve(row[row > 0][None], grid) for row in matrix], axis=0)
    return out


def _clean_accuracies(summary: pd.DataFrame) -> dict[str, tuple[float, float]]:
    clean = summary[summary["attack"] == CLEAN].pivot_table(index="strategy", columns="metric", values="mean")
    if not {"clean_acc", "clean_bacc"} <= set(clean.columns):
        return {}
    return {s: (row.clean_acc, row.clean_bacc) for s, row in clean.iterrows() if not math.isnan(row.clean_acc)}


def _subject(config: Mapping) -> str:
    dataset = (config.get("dataset") or {}).get("name", "unknown dataset")
    backbone = config.get("backbone") or {}
    size = backbone.get("image_size")
    n_test = (config.get("split") or {}).get("n_test")
    return (f"{dataset}, {backbone.get('name', 'unknown backbone')}" + (f" at {size}×{size}" if size else "")
            + (f", {n_test} test images" if n_test else ""))
