"""Train/val/test indices that keep every lesion on one side and each class in its share.

A per-image split of HAM10000 leaks: several images show the same lesion, and a model that saw
one of them in training recognises the others in test (Abhishek et al., arXiv:2401.14497).
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from robench.data import ImageSet, Split
from robench.errors import DataError


def split(images: ImageSet, *, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15) -> Split:
    """Hold out test first, then val from the rest, both grouped by lesion and stratified by class."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"cannot split with val_fraction={val_fraction}, test_fraction={test_fraction}: "
            "use 0 <= val < 1, 0 < test < 1 and val + test < 1"
        )
    labels = images.labels.numpy()
    groups = np.asarray(images.groups)
    everything = np.arange(len(labels))
    rest, test = _hold_out(everything, labels, groups, test_fraction, seed)
    train, val = _hold_out(rest, labels, groups, val_fraction / (1 - test_fraction), seed)
    test_ids = "\n".join(sorted(images.ids[index] for index in test))
    return Split(
        train=train, val=val, test=test, seed=seed,
        fingerprint=hashlib.sha256(test_ids.encode()).hexdigest()[:12],
    )


def _hold_out(
    indices: np.ndarray, labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (kept, held out), the held-out part being one fold of round(1 / fraction)."""
    if fraction == 0:
        return indices, indices[:0]
    folds = max(2, round(1 / fraction))
    n_groups = len(np.unique(groups[indices]))
    if n_groups < folds:
        raise DataError(
            f"cannot hold out {fraction:.0%} of {n_groups} lesions by lesion: use more images (a larger subset)"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class with fewer images than folds is expected in small subsets: it lands in some folds only.
        warnings.filterwarnings("ignore", message="The least populated class in y", category=UserWarning)
        kept, held_out = next(splitter.split(indices, labels[indices], groups[indices]))
    return indices[kept], indices[held_out]


def stratified_sample(labels: np.ndarray, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of `size` items drawn in each class's share of `labels`, the same for the same input.

    For attacks too slow for a whole test split: every model is attacked on these same images.
    Each class gets one item first (when `size` allows), then the rest goes by largest
    remainder of its exact share, so rare classes stay in and balanced accuracy stays defined.
    """
    labels = np.asarray(labels)
    if size >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.minimum(counts, 1) if size >= len(classes) else np.zeros_like(counts)
    exact = size * counts / counts.sum()
    while quota.sum() < size:
        quota[np.argmax(np.where(quota < counts, exact - quota, -np.inf))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))
