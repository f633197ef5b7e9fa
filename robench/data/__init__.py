"""Datasets: decoded, resized images as uint8 tensors, and lesion-grouped splits.

Contract used by the runner (implemented in the modules of this package):

- ``load(name, *, data_dir, image_size, subset=None) -> ImageSet``
  ``name`` is ``"ham10000"`` or ``"synthetic"``. Unknown names raise ``DataError``
  listing the valid ones.
- ``load_isic2018_test(test_dir, *, image_size) -> ImageSet``: the official held-out test set.
- ``split(images, *, seed=0, val_fraction=0.15, test_fraction=0.15) -> Split``
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# HAM10000's `dx` codes in alphabetical order: the label index of every dataset in robench.
HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Malignant or pre-malignant (melanoma, basal cell carcinoma, actinic keratosis / Bowen's disease);
# the others are benign. Calling one of these benign is a missed cancer (robench.per_class).
HAM10000_MALIGNANT = ("akiec", "bcc", "mel")


@dataclass(frozen=True)
class ImageSet:
    """Every image of one dataset at one size, decoded once and kept in memory."""

    name: str
    classes: tuple[str, ...]
    images: torch.Tensor  # uint8, N x 3 x S x S, RGB
    labels: torch.Tensor  # int64, N
    ids: tuple[str, ...]  # image ids, e.g. "ISIC_0024306"
    groups: tuple[str, ...]  # lesion ids: images of one lesion stay on one side of a split
    description: str  # one line for the leaderboard header: source, subset, image size

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Indices into an ImageSet, grouped by lesion and stratified by class."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    fingerprint: str  # short sha256 of the sorted test image ids: two runs compare only if equal


# The loaders import the dataclasses above, so they are imported after them.
from robench.data.ham10000 import load_ham10000  # noqa: E402
from robench.data.isic2018 import load_isic2018_test  # noqa: E402
from robench.data.split import split  # noqa: E402
from robench.data.synthetic import load_synthetic  # noqa: E402
from robench.errors import DataError  # noqa: E402

DATASETS = ("ham10000", "synthetic")


def load(name: str, *, data_dir: Path | str | None = None, image_size: int, subset: int | None = None) -> ImageSet:
    """The dataset `name` at S x S; `subset` asks for about that many images (lesions kept whole)."""
    if name == "ham10000":
        return load_ham10000(data_dir, image_size=image_size, subset=subset)
    if name == "synthetic":
        return load_synthetic(image_size=image_size, size=subset)
    raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


__all__ = ["DATASETS", "HAM10000_CLASSES", "HAM10000_MALIGNANT", "ImageSet", "Split", "load", "load_isic2018_test", "split"]
