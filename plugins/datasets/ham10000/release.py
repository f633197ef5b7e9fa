"""HAM10000 as the public release lays it out: a metadata CSV and a folder (or two) of JPEGs.

Tschandl et al., Sci. Data 5, 180161 (2018); Harvard Dataverse doi:10.7910/DVN/DBW86T.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import torch

from robench.data import ImageSet, load_images, read_csv, select_groups
from robench.errors import DataError

# HAM10000's `dx` codes in alphabetical order: the label indices of this dataset and of ISIC 2018.
CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# Malignant or pre-malignant (melanoma, basal cell carcinoma, actinic keratosis / Bowen's disease);
# the others are benign. Calling one of these benign is a missed cancer (robench.report.per_class).
MALIGNANT = ("akiec", "bcc", "mel")

METADATA = "HAM10000_metadata.csv"
# The shared copy keeps every image in images/; the Dataverse release splits them over two zips.
IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2")
SUBSET_SEED = 0
# A subset keeps at least this many lesions of each class, so rare classes reach every split.
MIN_LESIONS_PER_CLASS = 5

_DOWNLOAD_HINT = "run `robench data download ham10000`"


def default_data_dir() -> Path:
    """$ROBENCH_DATA_DIR, else the folder `robench data download ham10000` fills."""
    return Path(os.environ.get("ROBENCH_DATA_DIR") or pooch.os_cache("robench") / "ham10000")


def load_ham10000(
    data_dir: Path | str | None = None, *, image_size: int, subset: int | None = None
) -> ImageSet:
    """Every image of the release (or a lesion subset of about `subset` images), decoded at S x S."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise DataError(
            f"no HAM10000 data in {root}: {_DOWNLOAD_HINT}, or pass --data-dir / set ROBENCH_DATA_DIR "
            f"to a folder holding {METADATA}; `--dataset synthetic` works offline"
        )
    metadata = read_csv(root / METADATA, ("lesion_id", "image_id", "dx"), hint=_DOWNLOAD_HINT)
    _check_classes(metadata, root / METADATA)
    paths = _image_paths(root, metadata["image_id"])
    chosen = metadata if subset is None else metadata.iloc[select_lesions(metadata, subset)]
    extent = f"{len(metadata)} images"
    if subset is not None:
        extent = f"{len(chosen)} of {extent} (class-stratified lesion subset, seed {SUBSET_SEED})"
    return ImageSet(
        name="ham10000",
        classes=CLASSES,
        images=load_images([paths[image_id] for image_id in chosen["image_id"]], image_size),
        labels=torch.tensor([CLASSES.index(dx) for dx in chosen["dx"]], dtype=torch.int64),
        ids=tuple(chosen["image_id"]),
        groups=tuple(chosen["lesion_id"]),
        description=f"HAM10000 ({root}), {extent}, {image_size}x{image_size}",
    )


def select_lesions(metadata: pd.DataFrame, size: int, *, seed: int = SUBSET_SEED) -> np.ndarray:
    """Positions of whole lesions totalling about `size` images, each class in its natural share
    and with at least MIN_LESIONS_PER_CLASS lesions (robench.data.select_groups)."""
    return select_groups(metadata["dx"], metadata["lesion_id"], size, seed=seed, min_groups=MIN_LESIONS_PER_CLASS)


def _check_classes(metadata: pd.DataFrame, path: Path) -> None:
    unknown = sorted({str(dx) for dx in metadata["dx"]} - set(CLASSES))
    if unknown:
        raise DataError(
            f"{path} has unknown dx value(s) {', '.join(unknown)} "
            f"(expected {', '.join(CLASSES)}): use the original HAM10000 metadata"
        )


def _image_paths(root: Path, image_ids: pd.Series) -> dict[str, Path]:
    """Each image id's JPEG, found in any of IMAGE_DIRS (also one folder down, as some zips nest)."""
    found = {path.stem: path for folder in IMAGE_DIRS for path in (root / folder).rglob("*.jpg")}
    missing = [image_id for image_id in image_ids if image_id not in found]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(image_ids)} images listed in {root / METADATA} have no .jpg file "
            f"in {root}/{{{','.join(IMAGE_DIRS)}}} (first missing: {missing[0]}): "
            f"delete the incomplete folders and {_DOWNLOAD_HINT}"
        )
    return found
