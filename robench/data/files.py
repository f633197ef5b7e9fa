"""An ImageSet from a list of image files and their labels: what a dataset of a user's own files needs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from robench.data.images import load_images
from robench.data.split import select_groups
from robench.dataset import SPLITS, ImageSet
from robench.errors import DataError

# What PIL decodes and a user's folder is likely to hold.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_set(name: str, files: Sequence[Path], labels: Sequence[str], *, classes: Sequence[str], image_size: int,
              source: str, ids: Sequence[str], groups: Sequence[str] | None = None,
              assigned: Sequence[str] | None = None, subset: int | None = None) -> ImageSet:
    """Decode ``files`` (through the cache) into an ImageSet with ``classes`` in that order.

    ``groups`` default to one per image; ``assigned`` ("train"/"val"/"test" per file) fixes the
    split; ``subset`` keeps about that many images, whole groups, each class in its share.
    """
    classes, labels, ids, source = [readable(c) for c in classes], [readable(x) for x in labels], [readable(i) for i in ids], readable(source)
    groups = None if groups is None else [readable(g) for g in groups]
    if len(classes) < 2:
        raise DataError(f"{source} has {len(classes)} class(es) ({', '.join(classes) or 'none'}): "
                        "a classifier needs at least 2; add a folder or label per class")
    empty = [c for c in classes if c not in set(labels)]
    if empty:
        raise DataError(f"{source}: class(es) {', '.join(empty)} have no images: add images of them or remove them")
    groups = list(ids) if groups is None else list(groups)
    if assigned is not None and set(assigned) - set(SPLITS):
        raise DataError(f"{source}: split values must be {', '.join(SPLITS)}, found {', '.join(sorted(set(assigned) - set(SPLITS)))}")
    keep = np.arange(len(files)) if subset is None else select_groups(labels, groups, subset)
    index = {c: i for i, c in enumerate(classes)}
    extent = f"{len(files)} images" if subset is None else f"{len(keep)} of {len(files)} images (class-stratified group subset)"
    return ImageSet(
        name=name,
        classes=tuple(classes),
        images=load_images([files[i] for i in keep], image_size),
        labels=torch.tensor([index[labels[i]] for i in keep], dtype=torch.int64),
        ids=tuple(ids[i] for i in keep),
        groups=tuple(groups[i] for i in keep),
        description=f"{source}, {extent}, {len(classes)} classes, {image_size}x{image_size}",
        assigned=None if assigned is None else tuple(assigned[i] for i in keep),
    )


def readable(text: str) -> str:
    """A name taken from the file system as valid text: bytes that are not UTF-8 (a Latin-1 folder
    name, which Python keeps as lone surrogates that no file or page can hold) written as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def data_folder(data_dir: Path | None, dataset: str) -> Path:
    """The --data-dir a dataset of the user's own files needs, checked to be a folder."""
    if data_dir is None:
        raise DataError(f"dataset {dataset!r} reads your files: pass --data-dir FOLDER")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"--data-dir {root} is not a folder: pass the folder that holds your images")
    return root
