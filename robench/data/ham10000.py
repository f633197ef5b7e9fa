"""HAM10000 as the public release lays it out: a metadata CSV and a folder (or two) of JPEGs.

Tschandl et al., Sci. Data 5, 180161 (2018); Harvard Dataverse doi:10.7910/DVN/DBW86T.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import torch

from robench.data import HAM10000_CLASSES, ImageSet
from robench.data.images import load_images
from robench.errors import DataError

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
    chosen = metadata if subset is None else metadata.loc[select_lesions(metadata, subset)]
    extent = f"{len(metadata)} images"
    if subset is not None:
        extent = f"{len(chosen)} of {extent} (class-stratified lesion subset, seed {SUBSET_SEED})"
    return ImageSet(
        name="ham10000",
        classes=HAM10000_CLASSES,
        images=load_images([paths[image_id] for image_id in chosen["image_id"]], image_size),
        labels=torch.tensor([HAM10000_CLASSES.index(dx) for dx in chosen["dx"]], dtype=torch.int64),
        ids=tuple(chosen["image_id"]),
        groups=tuple(chosen["lesion_id"]),
        description=f"HAM10000 ({root}), {extent}, {image_size}x{image_size}",
    )


def read_csv(path: Path, columns: Sequence[str], *, hint: str) -> pd.DataFrame:
    """A CSV that must exist and hold `columns`; `hint` tells the user how to get a good copy."""
    if not path.is_file():
        raise DataError(f"{path} not found: {hint}")
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} is not a readable CSV ({' '.join(str(error).split())}): {hint}") from None
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}: {hint}")
    return table


def select_lesions(metadata: pd.DataFrame, size: int, *, seed: int = SUBSET_SEED) -> pd.Index:
    """Row labels of whole lesions totalling about `size` images, in each class's natural share.

    Chosen from the metadata alone, before any decoding. Per class, lesions are shuffled with a
    fixed seed and taken while the running image count stays within the class's share of `size`;
    every class keeps at least MIN_LESIONS_PER_CLASS lesions (or all it has).
    """
    if size < 1:
        raise DataError(f"subset must be a positive number of images, got {size}")
    rng = np.random.default_rng(seed)
    share = metadata["dx"].value_counts(normalize=True)
    lesion_sizes = metadata.groupby("lesion_id", sort=True).agg(dx=("dx", "first"), images=("image_id", "size"))
    chosen = []
    for dx, lesions in lesion_sizes.groupby("dx", sort=True):
        shuffled = lesions.iloc[rng.permutation(len(lesions))]
        within_share = int(np.searchsorted(shuffled["images"].cumsum(), size * share[dx], side="right"))
        chosen.extend(shuffled.index[: max(within_share, MIN_LESIONS_PER_CLASS)])
    return metadata.index[metadata["lesion_id"].isin(chosen)]


def _check_classes(metadata: pd.DataFrame, path: Path) -> None:
    unknown = sorted({str(dx) for dx in metadata["dx"]} - set(HAM10000_CLASSES))
    if unknown:
        raise DataError(
            f"{path} has unknown dx value(s) {', '.join(unknown)} "
            f"(expected {', '.join(HAM10000_CLASSES)}): use the original HAM10000 metadata"
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
