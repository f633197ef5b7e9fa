"""What a dataset is: labelled images decoded at one size, and the few facts about them robench needs.

A dataset plugin subclasses :class:`Dataset`, takes its options as keyword arguments of
``__init__`` (``--dataset csv:file=labels.csv:group=patient``) and registers the class through
the ``register_datasets`` hook, like a strategy. Its ``load`` returns an :class:`ImageSet`:
uint8 pixels already at the run's image size, so that every cell of a run shares one decoded copy.
Helpers for writing one (decoding with an on-disk cache, CSV checks, a grouped subset) are in
``robench.data``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from robench.errors import DataError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageSet:
    """Every image of one dataset at one size, decoded once and kept in memory."""

    name: str
    classes: tuple[str, ...]  # label i is classes[i]; any number >= 2
    images: torch.Tensor  # uint8, N x 3 x S x S, RGB
    labels: torch.Tensor  # int64, N
    ids: tuple[str, ...]  # image ids, e.g. "ISIC_0024306" or a path relative to the data folder
    groups: tuple[str, ...]  # e.g. lesion or patient ids: images of one group stay on one side of a split
    description: str  # one line for the leaderboard header: source, subset, image size
    assigned: tuple[str, ...] | None = None  # per image "train", "val" or "test" when the dataset fixes the split

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Split:
    """Indices into an ImageSet, grouped and stratified by class (or the dataset's own split)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int
    fingerprint: str  # short sha256 of the sorted test image ids: two runs compare only if equal


# Label-preserving transforms a recipe with ``augment=True`` draws from, each applied with
# probability 1/2. Which hold is a property of the images, not of the strategy: a lesion seen
# through a dermatoscope has no orientation (all 8 symmetries of the square), a photograph keeps
# its up and down (horizontal flip only), a chest X-ray keeps even its left and right (none).
SYMMETRIES = {
    "dihedral": (lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.transpose(-1, -2)),
    "hflip": (lambda x: x.flip(-1),),
    "none": (),
}


class Dataset:
    """Where a run's images come from. Subclasses set ``name`` and implement ``load``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    symmetries: str = "none"  # a key of SYMMETRIES; an instance may set it from an option
    positive: tuple[str, ...] = ()  # classes whose miss matters most (malignant): per-class views, `pgd:target=benign`
    test_sets: ClassVar[tuple[str, ...]] = ()  # external test sets for `--test-set NAME --test-dir DIR`
    image_size: ClassVar[int | None] = None  # default --image-size; None: the backbone's own input size
    default_backbone: ClassVar[str | None] = None  # default --backbone; None: robench's default
    offline: ClassVar[bool] = False  # True: a backbone without --weights starts from random init, no hub download

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        """The images at ``image_size`` x ``image_size``; ``subset`` asks for about that many
        (whole groups, each class in its share). Raise ``DataError`` with what to do on bad data."""
        raise NotImplementedError

    def load_test_set(self, name: str, test_dir: Path | None, *, image_size: int) -> ImageSet:
        """An external test set named in ``test_sets``, with the same classes as ``load``'s."""
        raise DataError(f"dataset {self.name!r} has no external test set {name!r}: use --test-set split")

    def default_data_dir(self) -> Path | None:
        """Where the data is when --data-dir is not given (e.g. where ``download`` puts it)."""
        return None

    def download(self, to: Path) -> Path:
        """Fetch the data into ``to`` for ``robench data download NAME``; return the folder to pass as --data-dir."""
        raise DataError(f"dataset {self.name!r} cannot be downloaded by robench: get it by hand and pass --data-dir")

    @classmethod
    def downloadable(cls) -> bool:
        return cls.download is not Dataset.download


def check_symmetries(value: str) -> str:
    """A dataset option's symmetries, or a ValueError naming the valid ones (options turn it into one line)."""
    if value not in SYMMETRIES:
        raise ValueError(f"symmetries must be one of {', '.join(SYMMETRIES)}, not {value!r}")
    return value
