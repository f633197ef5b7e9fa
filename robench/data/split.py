"""Train/val/test indices that keep every group (lesion, patient) on one side and each class in its share.

A per-image split of HAM10000 leaks: several images show the same lesion, and a model that saw
one of them in training recognises the others in test (Abhishek et al., arXiv:2401.14497).
A dataset that fixes its own split (``ImageSet.assigned``) keeps it; val is then held out of
train by the same grouped rule when the dataset has none.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from robench.core.progress import say
from robench.dataset import ImageSet, Split
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
    if images.assigned is not None:
        assigned = np.asarray(images.assigned)
        test, train, val = (np.flatnonzero(assigned == part) for part in ("test", "train", "val"))
        _check_trained_classes(images, train, {"val": val, "test": test})
        if not len(val):
            train, val = _hold_out(train, labels, groups, val_fraction / (1 - test_fraction), seed)
    else:
        rest, test = _hold_out(np.arange(len(labels)), labels, groups, test_fraction, seed)
        train, val = _hold_out(rest, labels, groups, val_fraction / (1 - test_fraction), seed)
    _check_trained_classes(images, train, {"val": val, "test": test})
    _say_missing_classes(images, {"test": test, "validation": val})
    test_ids = "\n".join(sorted(images.ids[index] for index in test))
    return Split(
        train=train, val=val, test=test, seed=seed,
        fingerprint=hashlib.sha256(test_ids.encode()).hexdigest()[:12],
    )


def _check_trained_classes(images: ImageSet, train: np.ndarray, others: dict[str, np.ndarray]) -> None:
    """Refuse a split whose training part lacks a class that val or test has: a model cannot learn it."""
    if not len(train):
        raise DataError(f"{images.name}: no training images: the dataset's train part is empty")
    trained = set(images.labels[train].tolist())
    for part, indices in others.items():
        untrained = sorted(set(images.labels[indices].tolist()) - trained)
        if untrained:
            names = ", ".join(images.classes[label] for label in untrained)
            raise DataError(f"{images.name}: class(es) {names} in {part} have no training image: "
                            "add training images of them, or remove them from the data")


def _say_missing_classes(images: ImageSet, parts: dict[str, np.ndarray]) -> None:
    """One line per part that lacks a class the data has: its balanced accuracy is then over fewer
    classes than the model answers, which a reader of the page would not guess."""
    present, counts = np.unique(images.labels.numpy(), return_counts=True)
    for part, indices in parts.items():
        if not len(indices):
            continue
        missing = [(images.classes[c], n) for c, n in zip(present, counts) if c not in set(images.labels[indices].tolist())]
        if missing:
            names = ", ".join(f"{name} ({n} image{'s' if n > 1 else ''} in all)" for name, n in missing)
            say(f"{images.name}: no {part} image of class(es) {names}, too few to hold some out by group: "
                f"its balanced accuracy is over the other {len(present) - len(missing)} classes; add images of them or remove them")


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
            f"cannot hold out {fraction:.0%} of {n_groups} groups (lesions, patients) by group: use more images (a larger subset)"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # A class with fewer images than folds is expected in small subsets: it lands in some folds only.
        warnings.filterwarnings("ignore", message="The least populated class in y", category=UserWarning)
        try:
            kept, held_out = next(splitter.split(indices, labels[indices], groups[indices]))
        except ValueError:  # sklearn: every class has fewer images than folds
            raise DataError(f"cannot hold out {fraction:.0%} by group: every class has fewer than {folds} images; "
                            "use more images (a larger subset)") from None
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


def select_groups(labels: Sequence[str], groups: Sequence[str], size: int, *, seed: int = 0,
                  min_groups: int = 5) -> np.ndarray:
    """Sorted indices of whole groups totalling about `size` images, each class in its natural share.

    Chosen from the labels alone, before any image is decoded. Per class, groups are shuffled
    with a fixed seed and taken while the running image count stays within the class's share of
    `size`; every class keeps at least `min_groups` groups (or all it has), so rare classes reach
    every part of the split.
    """
    if size < 1:
        raise DataError(f"subset must be a positive number of images, got {size}")
    table = pd.DataFrame({"label": list(labels), "group": list(groups)})
    share = table["label"].value_counts(normalize=True)
    sizes = table.groupby("group", sort=True).agg(label=("label", "first"), images=("label", "size"))
    rng = np.random.default_rng(seed)
    chosen = []
    for label, members in sizes.groupby("label", sort=True):
        shuffled = members.iloc[rng.permutation(len(members))]
        within_share = int(np.searchsorted(shuffled["images"].cumsum(), size * share[label], side="right"))
        chosen.extend(shuffled.index[: max(within_share, min_groups)])
    return np.flatnonzero(table["group"].isin(chosen).to_numpy())
