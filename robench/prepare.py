"""The data side of a run: the images, their split, the test set and which test images are
attacked, decoded once and shared by every cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robench import data
from robench.data.split import stratified_sample


@dataclass
class Prepared:
    """The data side of a run, decoded once and shared by every cell."""

    images: data.ImageSet
    split: data.Split
    test: data.ImageSet | None  # an external test set, or None for the split's test part
    attacked: np.ndarray | None = None  # indices into the test set that attacks run on; None: all

    def test_ids(self) -> list[str]:
        """The ids of the test images, in the order of the test arrays."""
        return self.test.ids if self.test is not None else [self.images.ids[i] for i in self.split.test]


def prepare_data(config) -> Prepared:
    size = config.backbone.image_size
    images = data.load(config.dataset, data_dir=config.data_dir, image_size=size, subset=config.subset)
    split = data.split(images, seed=config.split_seed)
    test = data.load_isic2018_test(config.test_dir, image_size=size) if config.test_set == "isic2018" else None
    prepared = Prepared(images, split, test)
    if config.attack_samples is not None and config.attack_samples < len(_test_arrays(prepared)[1]):
        # from the split alone, so every strategy and seed is attacked on the same images
        prepared.attacked = stratified_sample(_test_arrays(prepared)[1].numpy(), config.attack_samples, seed=split.seed)
    return prepared


def malignant_classes(prepared: Prepared) -> list[str]:
    return [c for c in data.HAM10000_MALIGNANT if c in prepared.images.classes]


def _test_arrays(prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    if prepared.test is not None:
        return prepared.test.images, prepared.test.labels
    return prepared.images.images[prepared.split.test], prepared.images.labels[prepared.split.test]


def attacked_images(prepared: Prepared) -> dict:
    """The ids and labels of the attacked test images, in the order of every row's per-image
    predictions (``clean_pred``, ``adv_pred``): what makes a row's metrics recomputable."""
    labels, ids = _test_arrays(prepared)[1], prepared.test_ids()
    order = range(len(labels)) if prepared.attacked is None else [int(i) for i in prepared.attacked]
    return {"ids": [ids[i] for i in order], "labels": [int(labels[i]) for i in order]}
