"""Classification metrics. Balanced accuracy (mean per-class recall) is ISIC's ranking metric:
on HAM10000, where 67% of images are `nv`, accuracy alone hides a collapsed model.

Metrics take a boolean ``hits`` mask (was image i classified correctly?), so the same code
scores clean predictions and attacks, where only survival matters.
"""

from __future__ import annotations

import torch


def accuracy(hits: torch.Tensor) -> float:
    return float(hits.float().mean()) if len(hits) else float("nan")


def balanced_accuracy(labels: torch.Tensor, hits: torch.Tensor) -> float:
    """Mean recall over the classes present in ``labels``."""
    classes = labels.unique()
    if not len(classes):
        return float("nan")
    return float(torch.stack([hits[labels == c].float().mean() for c in classes]).mean())


def majority_accuracy(train_labels: torch.Tensor, test_labels: torch.Tensor) -> float:
    """Accuracy of always answering the training split's most frequent class."""
    return accuracy(test_labels == torch.bincount(train_labels).argmax())


def robust_metrics(labels: torch.Tensor, survived: torch.Tensor, n_clean_correct: int) -> dict:
    """A cell's metrics under both protocols, from which images survived the attack (an image wrong
    before the attack never survives) and how many were correct before it."""
    on_correct = float(survived.sum()) / n_clean_correct if n_clean_correct else float("nan")
    return {
        "robust_acc": accuracy(survived),
        "robust_bacc": balanced_accuracy(labels, survived),
        "n_clean_correct": n_clean_correct,
        "acc_on_correct": on_correct,
        "attack_success_rate": 1 - on_correct,
    }


def eps_label(eps: float) -> str:
    """eps as a page shows it: a multiple of 0.25/255 as ``0.25/255``, ``0.5/255``, ``1/255``, ``2/255``,
    the way the threat model is usually written, where the decimal would be ``0.000980392``; a short
    decimal as typed (``0.01``, ``0.02``, and L2 radii such as ``0.5``, which is 127.5/255 but not a
    pixel level anyone means)."""
    quarters = eps * 255 * 4
    if eps > 0 and abs(quarters - round(quarters)) < 1e-4 and len(f"{eps:g}") > 6:
        return f"{round(quarters) / 4:g}/255"
    return f"{eps:g}"
