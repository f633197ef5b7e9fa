"""Reliability diagrams: how often each model is right at each confidence it states, clean.

The ECE in the headline is one number; the diagram shows where it comes from (over-confident at the
top bins, under-confident at the bottom). One PNG per page, a panel per strategy: per confidence bin
the accuracy (bars) against the diagonal of perfect calibration, from the clean rows' bins
(robench.pipeline.calibration.reliability) with the images of every seed pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robench.attack import CLEAN
from robench.report.panels import panel_grid


def pooled(frame: pd.DataFrame, strategy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Counts, accuracy and mean confidence per bin of a strategy's clean rows, seeds pooled; None without bins."""
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == CLEAN) & (frame["status"] == "ok")]
    found = [r for r in rows.get("reliability", pd.Series(dtype=object)) if isinstance(r, dict)]
    if not found:
        return None
    counts = np.sum([r["counts"] for r in found], axis=0)
    hits = np.sum([[0.0 if a is None else a * n for a, n in zip(r["accuracy"], r["counts"])] for r in found], axis=0)
    sure = np.sum([[0.0 if c is None else c * n for c, n in zip(r["confidence"], r["counts"])] for r in found], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, hits / counts, sure / counts


def figure(frame: pd.DataFrame, strategies: Sequence[str], subject: str) -> Figure | None:
    """The page's reliability figure; None where no strategy's clean rows carry bins (older runs)."""
    found = {s: p for s in strategies if (p := pooled(frame, s)) is not None}
    if not found:
        return None
    fig, axes = panel_grid(len(found), 3.6, 3.4)
    for index, (ax, (strategy, (counts, accuracy, confidence))) in enumerate(zip(axes, found.items())):
        bins = len(counts)
        centres = (np.arange(bins) + 0.5) / bins
        filled = counts > 0
        ax.bar(centres[filled], accuracy[filled], width=1 / bins, edgecolor="black", linewidth=0.4, label="accuracy")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8, label="calibrated")
        ax.scatter(confidence[filled], accuracy[filled], s=8, color="black", zorder=3, label="(mean confidence, accuracy)")
        ece = float(np.nansum(np.abs(accuracy - confidence) * counts) / counts.sum())
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_title(f"{strategy}\nECE {100 * ece:.1f}% over the {int(counts.sum())} answers pooled", fontsize=9)
        if index == 0:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Reliability on clean test images: {subject}", fontsize=10)
    return fig
