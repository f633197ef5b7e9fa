"""A HAM10000 look-alike generated from a seed: runs the whole benchmark offline in seconds.

Each "lesion" is a blob on noisy skin-coloured background; its class sets the blob's colour,
shape and texture, while position, size, orientation, tint and noise are random, so a tiny ViT
has something to learn but not a single pixel to read it from. Every lesion is photographed two
or three times (same blob, fresh noise and a small shift), so grouped splitting matters here too.
Class frequencies follow HAM10000's (nv about two thirds).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import robench
from robench.dataset import Dataset, ImageSet

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")  # HAM10000's, which it imitates
SEED = 0
DEFAULT_SIZE = 700  # images, about
# HAM10000's class counts, in CLASSES order: the synthetic set keeps their proportions.
_HAM10000_COUNTS = (327, 514, 1099, 115, 1113, 6705, 142)
_MIN_LESIONS_PER_CLASS = 8  # so that the rarest classes still reach train, val and test
_IMAGES_PER_LESION = 2.5  # on average: two or three
# Drawn at most this large and upsampled: the shapes are coarse, and 224x224 stays fast.
_MAX_RENDER_SIZE = 64

# Per class (CLASSES order): blob RGB, Lp-norm exponent of the outline (1 diamond, 2 disc,
# 6 squarish), aspect ratio, ring (hollow centre), lobes on the border, texture frequency in cycles
# per radius (coarse enough to survive 32x32) and texture kind (0 none, 1 stripes, 2 dots).
_COLOUR = ((0.80, 0.33, 0.33), (0.66, 0.42, 0.62), (0.62, 0.44, 0.24), (0.50, 0.32, 0.22),
           (0.20, 0.12, 0.16), (0.45, 0.27, 0.14), (0.55, 0.08, 0.30))
_NORM_P = (6.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0)
_ASPECT = (1.0, 1.0, 2.0, 1.0, 1.2, 1.0, 1.0)
_RING = (0, 1, 0, 0, 0, 0, 0)
_LOBES = (0, 0, 0, 0, 5, 0, 0)
_TEXTURE_FREQ = (2.5, 0.0, 2.0, 1.5, 1.5, 0.0, 2.0)
_TEXTURE_KIND = (2, 0, 1, 1, 2, 0, 2)


class Synthetic(Dataset):
    """Synthetic HAM10000 look-alike from a seed: the whole benchmark offline, in seconds."""

    name = "synthetic"
    symmetries = "dihedral"  # blobs are drawn at random orientations
    positive = ("akiec", "bcc", "mel")
    default_backbone = "robench_vit_micro"
    offline = True

    def __init__(self, seed: int = SEED):
        if not 0 <= seed < 2**32:  # numpy's seeds
            raise ValueError(f"seed must be from 0 to {2**32 - 1}, got {seed}")
        self.seed = seed

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        return load_synthetic(image_size=image_size, size=subset, seed=self.seed)


@robench.hookimpl
def register_datasets(register):
    register(Synthetic)


def load_synthetic(*, image_size: int, size: int | None = None, seed: int = SEED) -> ImageSet:
    """About `size` images (default 700) at S x S, generated afresh, identical for identical arguments."""
    generator = torch.Generator().manual_seed(seed)
    lesion_labels = _lesion_labels(size or DEFAULT_SIZE)
    repeats = torch.randint(2, 4, (len(lesion_labels),), generator=generator)
    labels = lesion_labels.repeat_interleave(repeats)
    lesion_of_image = torch.arange(len(lesion_labels)).repeat_interleave(repeats)
    pixels = _draw(labels, lesion_of_image, len(lesion_labels), min(image_size, _MAX_RENDER_SIZE), generator)
    images = (pixels * 255).round().to(torch.uint8)
    if image_size > _MAX_RENDER_SIZE:
        images = torch.nn.functional.interpolate(images, size=image_size, mode="bilinear")
    return ImageSet(
        name="synthetic",
        classes=CLASSES,
        images=images,
        labels=labels,
        ids=tuple(f"synthetic_{index:05d}" for index in range(len(labels))),
        groups=tuple(f"lesion_{lesion:05d}" for lesion in lesion_of_image.tolist()),
        description=f"synthetic (seed {seed}), {len(labels)} images of {len(lesion_labels)} lesions, "
        f"{image_size}x{image_size}",
    )


def _lesion_labels(size: int) -> torch.Tensor:
    """Class of each lesion: HAM10000's shares of size / 2.5 lesions, at least a few per class."""
    total = sum(_HAM10000_COUNTS)
    per_class = [max(_MIN_LESIONS_PER_CLASS, round(size / _IMAGES_PER_LESION * count / total))
                 for count in _HAM10000_COUNTS]
    return torch.repeat_interleave(torch.arange(len(per_class)), torch.tensor(per_class))


def _draw(labels: torch.Tensor, lesion: torch.Tensor, n_lesions: int, size: int,
          generator: torch.Generator) -> torch.Tensor:
    """Every image at once as floats in [0, 1]: per-lesion blob parameters, per-image shift and noise."""
    def uniform(low: float, high: float, n: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    n = len(labels)
    # Per lesion, broadcast to its images: centre, radius, orientation, skin tint, colour jitter.
    centre = torch.stack([uniform(0.3, 0.7, n_lesions), uniform(0.3, 0.7, n_lesions)], 1)[lesion]
    centre = centre + uniform(-0.04, 0.04, 2 * n).view(n, 2)  # the camera moved a little
    radius = uniform(0.16, 0.30, n_lesions)[lesion].view(n, 1, 1)
    angle = uniform(0.0, math.pi, n_lesions)[lesion].view(n, 1, 1)
    skin = (torch.tensor((0.90, 0.72, 0.62)) + uniform(-0.06, 0.06, 3 * n_lesions).view(-1, 3))[lesion]
    colour = (torch.tensor(_COLOUR)[labels] + uniform(-0.10, 0.10, 3 * n_lesions).view(-1, 3)[lesion])

    axis = (torch.arange(size) + 0.5) / size
    y = axis.view(1, -1, 1) - centre[:, 1].view(n, 1, 1)
    x = axis.view(1, 1, -1) - centre[:, 0].view(n, 1, 1)
    along = x * torch.cos(angle) + y * torch.sin(angle)  # rotated coordinates
    across = -x * torch.sin(angle) + y * torch.cos(angle)

    def per_class(values: tuple) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)[labels].view(n, 1, 1)

    p = per_class(_NORM_P)
    distance = ((along / per_class(_ASPECT)).abs() ** p + across.abs() ** p) ** (1 / p)
    border = radius * (1 + 0.25 * torch.sin(per_class(_LOBES) * torch.atan2(across, along)))
    inside = torch.sigmoid((border - distance) * size * 1.5)  # soft edge about one pixel wide
    ring = per_class(_RING)
    inside = inside * (1 - ring * torch.sigmoid((0.5 * radius - distance) * size * 1.5))

    frequency = per_class(_TEXTURE_FREQ) * math.tau / radius
    kind = per_class(_TEXTURE_KIND)
    stripes = torch.sin(frequency * across)
    dots = torch.sin(frequency * along) * torch.sin(frequency * across)
    texture = torch.where(kind == 1, stripes, torch.where(kind == 2, dots, torch.zeros_like(dots)))
    shade = 1 + 0.35 * texture  # texture modulates the blob's brightness

    blob = colour.view(n, 3, 1, 1) * shade.unsqueeze(1)
    pixels = skin.view(n, 3, 1, 1) * (1 - inside.unsqueeze(1)) + blob * inside.unsqueeze(1)
    pixels = pixels + 0.06 * torch.randn(pixels.shape, generator=generator)
    return pixels.clamp(0, 1)
