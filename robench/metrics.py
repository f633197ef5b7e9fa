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
