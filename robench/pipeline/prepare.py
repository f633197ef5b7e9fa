"""The data side of a run: the dataset plugin, its images, their split, the test set and which
test images are attacked, decoded once and shared by every cell."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robench import data
from robench.dataset import Dataset, ImageSet, Split
from robench.errors import DataError
from robench.pipeline.options import parse_spec, resolve
from robench.pipeline.registry import load_registry

SPLIT_TEST = "split"  # --test-set value: the split's held-out part, not an external test set


@dataclass
class Prepared:
    """The data side of a run, decoded once and shared by every cell."""

    dataset: Dataset
    images: ImageSet
    split: Split
    test: ImageSet | None  # an external test set, or None for the split's test part
    attacked: np.ndarray | None = None  # indices into the test set that attacks run on; None: all

    def test_ids(self) -> list[str]:
        """The ids of the test images, in the order of the test arrays."""
        return self.test.ids if self.test is not None else [self.images.ids[i] for i in self.split.test]

    @property
    def positive(self) -> list[str]:
        """The classes the dataset calls positive (malignant), in class order."""
        return [c for c in self.images.classes if c in self.dataset.positive]


def resolve_dataset(text: str) -> Dataset:
    """The dataset plugin a ``--dataset`` spec names, with its options (one line if unknown)."""
    return resolve(load_registry(), "dataset", parse_spec(text, "dataset"))[0]


def prepare_data(config, dataset: Dataset | None = None) -> Prepared:
    """Load, check and split the data of ``config`` (``dataset``: its already resolved plugin)."""
    dataset = dataset or resolve_dataset(config.dataset)
    size = config.backbone.image_size
    test = None
    if config.test_set != SPLIT_TEST:  # first: a missing --test-dir is the cheaper mistake to report
        test = dataset.load_test_set(config.test_set, config.test_dir, image_size=size)
    try:
        images = dataset.load(config.data_dir or dataset.default_data_dir(), image_size=size, subset=config.subset)
    except (MemoryError, RuntimeError) as exc:  # torch says "can't allocate memory", numpy raises MemoryError
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        raise DataError(f"the images of {dataset.name} at {size}x{size} px do not fit in memory: lower --image-size "
                        "or use fewer images (--subset N)") from None
    unknown = sorted(set(dataset.positive) - set(images.classes))
    if unknown:
        raise DataError(f"positive class(es) {', '.join(unknown)} are not classes of {images.name} "
                        f"({', '.join(images.classes)}): name existing classes")
    split = data.split(images, seed=config.split_seed)
    if test is not None:
        if test.classes != images.classes:
            raise DataError(f"test set {config.test_set} has classes {', '.join(test.classes)}, the dataset "
                            f"{', '.join(images.classes)}: a model can only be tested on the classes it learned")
    prepared = Prepared(dataset, images, split, test)
    labels = test_arrays(prepared)[1]
    if config.attack_samples is not None and config.attack_samples < len(labels):
        # from the split alone, so every strategy and seed is attacked on the same images
        prepared.attacked = data.stratified_sample(labels.numpy(), config.attack_samples, seed=split.seed)
    return prepared


def test_arrays(prepared: Prepared) -> tuple[torch.Tensor, torch.Tensor]:
    if prepared.test is not None:
        return prepared.test.images, prepared.test.labels
    return prepared.images.images[prepared.split.test], prepared.images.labels[prepared.split.test]


def attacked_images(prepared: Prepared) -> dict:
    """The ids and labels of the attacked test images, in the order of every row's per-image
    predictions (``clean_pred``, ``adv_pred``): what makes a row's metrics recomputable."""
    labels, ids = test_arrays(prepared)[1], prepared.test_ids()
    order = range(len(labels)) if prepared.attacked is None else [int(i) for i in prepared.attacked]
    return {"ids": [ids[i] for i in order], "labels": [int(labels[i]) for i in order]}
