"""The official ISIC 2018 Task 3 test set: 1,512 lesions that are not in HAM10000, same 7 classes.

Codella et al., arXiv:1902.03368. Ground truth is one-hot in upper-case columns (MEL, NV, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robench.data import ImageSet, load_images, read_csv
from robench.errors import DataError
from robench_plugins.datasets.ham10000.release import CLASSES

GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
_HINT = "point to the ISIC 2018 Task 3 test folder (ground-truth CSV and images/)"


def load_isic2018_test(test_dir: Path | str, *, image_size: int) -> ImageSet:
    """Every test image that has a file; missing files are skipped and counted in the description."""
    root = Path(test_dir)
    columns = [dx.upper() for dx in CLASSES]
    truth = read_csv(root / GROUND_TRUTH, ["image", *columns], hint=_HINT)
    one_hot = truth[columns].apply(pd.to_numeric, errors="coerce").to_numpy()
    if not (np.isin(one_hot, (0, 1)).all() and (one_hot.sum(axis=1) == 1).all()):
        raise DataError(f"{root / GROUND_TRUTH} is not one-hot (one 1 per row in {','.join(columns)}): {_HINT}")
    paths = np.array([root / "images" / f"{image_id}.jpg" for image_id in truth["image"]], dtype=object)
    present = np.array([path.is_file() for path in paths], dtype=bool)
    if not present.any():
        raise DataError(f"none of the {len(paths)} images in {root / GROUND_TRUTH} is in {root / 'images'}: {_HINT}")
    extent = f"{present.sum()} of {len(paths)} images"
    if not present.all():
        missing = truth["image"][~present].tolist()
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        extent += f"; {len(missing)} missing ({shown})"
    ids = tuple(truth["image"][present])
    return ImageSet(
        name="isic2018_test",
        classes=CLASSES,
        images=load_images(list(paths[present]), image_size),
        labels=torch.from_numpy(one_hot[present].argmax(axis=1)),
        ids=ids,
        groups=ids,  # one image per lesion in this set
        description=f"ISIC 2018 Task 3 test ({root}), {extent}, {image_size}x{image_size}",
    )
