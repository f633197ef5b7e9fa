"""MedMNIST-C's dermatology corruptions of the attacked test images, as rows beside the attacks.

Why: a hospital's images meet natural shifts (noise, blur, compression, lighting, ink, a
dermatoscope's black corner) before they meet an adversary. MedMNIST-C (Di Salvo et al. 2024,
package ``medmnistc``) defines such corruptions for dermatoscopy at five severities; robench
applies them, with the package's own code and its ``dermamnist`` parameters, to the attacked test
images at the run's image size, and records a row per (corruption, severity) of family
``corruption``, the severity in the eps column, with the per-image answers every attack row has
(so intervals, paired tests and per-class recall come the same way). Every image is corrupted and
answered, those the model gets wrong on clean included: this is accuracy under a shift, not an
attack on what was right.

Deterministic per image and seed: each image's random draws (numpy's, Python's, and the
``rng`` MedMNIST-C's impulse noise reads) are seeded from (seed, corruption, severity, image id),
and the generators' states are restored afterwards, so neither the batch nor the order of the
cells changes a corrupted image.
"""

from __future__ import annotations

import hashlib
import random
import types
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from robench.attack import exact_arithmetic
from robench.core.corruption_names import ALL, FAMILY, NAMES, SEVERITIES, expand, refuse  # noqa: F401  (this module's API too)
from robench.core.metrics import robust_metrics
from robench.errors import RobenchError, one_line
from robench.pipeline.calibration import calibration
from robench.pipeline.evaluate import logits_of

NORM = "severity"  # its attack_norm: the eps column holds a severity, never combined with an attack's eps
PARAMETERS = "dermamnist"  # MedMNIST-C's parameters for dermatoscopy
INSTALL = 'pip install "robench[corruptions]" (MedMNIST-C; its motion blur needs ImageMagick: apt-get install libmagickwand-6.q16-6)'


def check(names: list[str], severities: list[int]) -> None:
    """Refuse an unknown corruption, a severity outside 1-5 or a MedMNIST-C that does not load, in one line."""
    refuse(names, severities)
    if names:
        corruptions()


def corruptions() -> dict:
    """MedMNIST-C's dermatology corruptions by name (the package imports scikit-image, OpenCV and Wand: seconds)."""
    try:
        from medmnistc.corruptions.registry import CORRUPTIONS_DS
    except ImportError as exc:
        raise RobenchError(f"--corruptions needs MedMNIST-C, which did not load ({str(exc).splitlines()[0]}): {INSTALL}") from None
    _numpy2_motion_blur()
    return CORRUPTIONS_DS[PARAMETERS]


def _numpy2_motion_blur() -> None:
    """MedMNIST-C 0.1's motion blur decodes ImageMagick's bytes with ``np.fromstring``, whose binary mode
    numpy 2 removed (ValueError); its module gets a numpy whose ``fromstring`` is ``frombuffer``, the
    same bytes read the same way. Nothing else of numpy, nor numpy for anyone else, changes."""
    from medmnistc.corruptions import filter as blur

    if isinstance(blur.np, types.ModuleType) and int(np.__version__.split(".")[0]) >= 2:
        blur.np = types.SimpleNamespace(**(vars(np) | {"fromstring": lambda data, dtype: np.frombuffer(data, dtype)}))


def corrupt(images: torch.Tensor, ids: list[str], name: str, severity: int, seed: int) -> torch.Tensor:
    """``images`` (N x 3 x H x W uint8) with corruption ``name`` at ``severity`` (1-5), each image
    drawn from its own seed; the same size and dtype."""
    corruption = corruptions()[name]
    out = torch.empty_like(images)
    for i, (image, image_id) in enumerate(zip(images, ids, strict=True)):
        with _seeded(_image_seed(seed, name, severity, image_id)) as rng:
            corruption.rng = rng  # MedMNIST-C's impulse noise reads it; its base class never sets it
            found = np.asarray(corruption.apply(Image.fromarray(image.permute(1, 2, 0).numpy()), severity=severity - 1))
        if found.ndim == 2:
            found = np.repeat(found[..., None], 3, axis=2)
        if found.shape[:2] != tuple(image.shape[1:]):
            found = np.asarray(Image.fromarray(found[..., :3]).resize(tuple(image.shape[1:][::-1]), Image.BILINEAR))
        out[i] = torch.from_numpy(np.ascontiguousarray(found[..., :3])).permute(2, 0, 1)
    return out


def evaluate(model, images: torch.Tensor, labels: torch.Tensor, ids: list[str], clean_preds: torch.Tensor,
             cells: list[tuple[str, int]], seed: int, batch_size: int, device) -> Iterator[tuple[str, int, dict | Exception]]:
    """Each (corruption, severity) cell's metrics, or the exception that failed it (the others go on)."""
    n_correct = int((clean_preds == labels).sum())
    for name, severity in cells:
        try:
            corrupted = corrupt(images, ids, name, severity, seed)
        except Exception as exc:  # noqa: BLE001  (a failed cell is recorded, the run goes on)
            size = "x".join(map(str, images.shape[-2:]))
            yield name, severity, ValueError(
                f"MedMNIST-C's {name} failed at severity {severity} on {size} images ({one_line(exc)}): some of its "
                f"corruptions need larger images (it was made for 224 px); use a larger --image-size or drop {name}")
            continue
        try:
            with exact_arithmetic():  # answered as the clean images are: no subnormal flush, no autocast
                logits = logits_of(model, corrupted, batch_size, device)
        except Exception as exc:  # noqa: BLE001
            yield name, severity, exc
            continue
        preds = logits.argmax(1)
        hits = preds == labels
        kept = float((hits & (clean_preds == labels)).sum()) / n_correct if n_correct else float("nan")  # of the clean-correct
        yield name, severity, robust_metrics(labels, hits, n_correct) | calibration(torch.softmax(logits, dim=1), labels) | {
            "acc_on_correct": kept, "attack_success_rate": 1 - kept, "adv_pred": preds.tolist()}


def fields(name: str, severity: int) -> dict:
    """The fields that name a corruption cell in its row."""
    return {"attack": name, "attack_name": name, "attack_family": FAMILY, "attack_norm": NORM, "attack_black_box": None,
            "eps": float(severity)}


def _image_seed(seed: int, name: str, severity: int, image_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}\t{name}\t{severity}\t{image_id}".encode()).digest()[:4], "little")


@contextmanager
def _seeded(value: int):
    """numpy's and Python's global generators seeded with ``value`` inside, restored after; and a
    numpy Generator of the same seed."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(value)
    random.seed(value)
    try:
        yield np.random.default_rng(value)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
