"""Confusion matrices under attack: which class each class's images are pushed to.

Per-class recall says how many images of a class an attack took; the confusion matrix says where
they went (a melanoma called a nevus is a missed cancer, called a basal cell carcinoma it is
not). One PNG per page: a heatmap per strategy of true class (rows) against the prediction after
the page's headline attack at its smallest eps (columns), counts summed over seeds, computed
from the rows' per-image records.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from robench.core.metrics import eps_label
from robench.report.panels import panel_grid


def matrix(frame: pd.DataFrame, labels, n_classes: int, strategy: str, attack: str, eps: float) -> np.ndarray | None:
    """Counts[true, predicted] over the attacked images and the seeds of one cell; None without records."""
    rows = frame[(frame["strategy"] == strategy) & (frame["attack"] == attack) & (frame["eps"] == eps)
                 & (frame["status"] == "ok")].drop_duplicates("seed", keep="last")
    labels = np.asarray(labels)
    counts = np.zeros((n_classes, n_classes), dtype=int)
    found = False
    for preds in rows["adv_pred"]:
        if isinstance(preds, list | np.ndarray) and len(preds) == len(labels):
            np.add.at(counts, (labels, np.asarray(preds)), 1)
            found = True
    return counts if found else None


def figure(frame: pd.DataFrame, labels, classes: Sequence[str], strategies: Sequence[str], attack: str, eps: float,
           subject: str) -> Figure | None:
    """The page's confusion-matrix figure; None where no strategy has records for the cell."""
    mats = {s: m for s in strategies if (m := matrix(frame, labels, len(classes), s, attack, eps)) is not None}
    if not mats:
        return None
    fig, axes = panel_grid(len(mats), 4.2, 4)
    for ax, (strategy, counts) in zip(axes, mats.items()):
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel("prediction after the attack", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
        ax.set_title(strategy, fontsize=9)
        top = counts.max() or 1
        for (i, j), value in np.ndenumerate(counts):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=6,
                        color="white" if value > top / 2 else "black")
    shown = eps_label(eps) if "/" in eps_label(eps) else f"{eps_label(eps)} ({255 * eps:.3g}/255)"
    fig.suptitle(f"confusion under {attack} at eps {shown}, counts summed over seeds\n"
                 f"{subject}", fontsize=10)
    return fig
