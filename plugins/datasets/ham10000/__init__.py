"""HAM10000 dermatoscopy (Tschandl et al. 2018), with the official ISIC 2018 Task 3 test set.

7 classes; images of one lesion share a ``lesion_id`` and stay on one side of the split.
Dermatoscopic images have no orientation, so all 8 symmetries of the square augment them.
"""

from __future__ import annotations

from pathlib import Path

import robench
from robench.dataset import Dataset, ImageSet
from robench.errors import DataError
from robench_plugins.datasets.ham10000.release import CLASSES, MALIGNANT, default_data_dir, load_ham10000

ISIC2018 = "isic2018"


class HAM10000(Dataset):
    """HAM10000 dermatoscopy, 7 classes, lesion-grouped split; external test set isic2018."""

    name = "ham10000"
    symmetries = "dihedral"
    positive = MALIGNANT
    test_sets = (ISIC2018,)

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        return load_ham10000(data_dir, image_size=image_size, subset=subset)

    def load_test_set(self, name: str, test_dir: Path | None, *, image_size: int) -> ImageSet:
        from robench_plugins.datasets.ham10000.isic2018 import load_isic2018_test

        if name != ISIC2018:
            return super().load_test_set(name, test_dir, image_size=image_size)
        if test_dir is None:
            raise DataError("--test-set isic2018 needs --test-dir, the folder with ISIC2018_Task3_Test_GroundTruth.csv and images/")
        return load_isic2018_test(test_dir, image_size=image_size)

    def default_data_dir(self) -> Path:
        return default_data_dir()

    def download(self, to: Path) -> Path:
        from robench_plugins.datasets.ham10000.download import download_ham10000

        return download_ham10000(to)


@robench.hookimpl
def register_datasets(register):
    register(HAM10000)


__all__ = ["CLASSES", "HAM10000", "MALIGNANT"]
