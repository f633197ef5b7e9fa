"""Helpers for dataset plugins and the engine: decoding with a cache, CSV checks, grouped splits.

The contract a dataset implements (``Dataset``, ``ImageSet``, ``Split``) is ``robench.dataset``;
the built-in datasets are plugins in ``plugins/datasets/``, registered like a third party's.

The data room owns decoding (``images``, with its cache), lists of files and CSV tables
(``files``, ``tables``) and splits (``split``). It is public: dataset plugins import it. May
import: ``robench.core`` and the public contracts (tests/test_architecture.py).
"""

from robench.data.images import decode_image, load_images
from robench.data.split import select_groups, split, stratified_sample
from robench.data.tables import read_csv
from robench.dataset import ImageSet, Split

__all__ = ["ImageSet", "Split", "decode_image", "load_images", "read_csv", "select_groups", "split", "stratified_sample"]
