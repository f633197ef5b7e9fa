"""MedMNIST v2 (Yang et al., Sci. Data 10, 41, 2023) through the ``medmnist`` package:
``pip install "robench[medmnist]"``, then ``--dataset medmnist:flag=dermamnist``.

The 2D multi-class and binary sets (dermamnist, bloodmnist, pathmnist, pneumoniamnist, ...) at
28, 64, 128 or 224 pixels (option ``size``), with the package's own train/val/test split, which
robench keeps. The file is the package's ``<flag>[_<size>].npz`` in --data-dir (default: the
package's cache folder, ``~/.medmnist``); ``robench data download medmnist:flag=...`` fetches it
with the package's downloader (checksum-verified). Images are resized to --image-size
bilinearly (antialiased), grayscale ones repeated to RGB. DermaMNIST is HAM10000 at low
resolution, with its split by image rather than by lesion: compare with HAM10000's own grouped split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import robench
from robench.data import select_groups
from robench.dataset import SPLITS, Dataset, ImageSet
from robench.errors import DataError, import_optional

INSTALL = 'pip install "robench[medmnist]"'
SIZES = (28, 64, 128, 224)
# Microscopy and dermoscopy have no orientation; radiographs, OCT and fundus images keep theirs.
DIHEDRAL = ("dermamnist", "pathmnist", "bloodmnist", "tissuemnist")
POSITIVE = {"dermamnist": ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "melanoma"),
            "pneumoniamnist": ("pneumonia",), "breastmnist": ("malignant",)}


class MedMNIST(Dataset):
    """MedMNIST v2 2D sets (flag=dermamnist, bloodmnist, ...), with their own split; needs the medmnist extra."""

    name = "medmnist"

    def __init__(self, flag: str = "dermamnist", size: int = 28):
        info = _medmnist().INFO
        usable = sorted(f for f, entry in info.items() if not f.endswith("3d") and "multi-label" not in entry["task"])
        if flag not in usable:
            raise ValueError(f"flag must be a 2D single-label MedMNIST set ({', '.join(usable)}), not {flag!r}")
        if size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(map(str, SIZES))}, not {size}")
        self.flag, self.size = flag, size
        self.symmetries = "dihedral" if flag in DIHEDRAL else "none"
        self.positive = POSITIVE.get(flag, ())

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        medmnist = _medmnist()
        info = medmnist.INFO[self.flag]
        root = Path(data_dir or self.default_data_dir())
        loader = getattr(medmnist, info["python_class"])
        parts = []
        for part in SPLITS:
            try:
                parts.append(loader(split=part, root=str(root), size=self.size, download=False))
            except RuntimeError:
                raise DataError(f"no {self._file()} in {root}: run `robench data download medmnist:flag={self.flag}"
                                f"{'' if self.size == 28 else f':size={self.size}'}` or pass --data-dir") from None
        pixels = np.concatenate([p.imgs for p in parts])
        labels = np.concatenate([np.asarray(p.labels).reshape(len(p.imgs), -1)[:, 0] for p in parts]).astype(np.int64)
        assigned = [part for part, p in zip(SPLITS, parts) for _ in range(len(p.imgs))]
        ids = [f"{part}_{index:06d}" for part, p in zip(SPLITS, parts) for index in range(len(p.imgs))]
        classes = tuple(info["label"][str(i)] for i in range(len(info["label"])))
        keep = np.arange(len(ids)) if subset is None else select_groups([classes[i] for i in labels], ids, subset)
        extent = f"{len(ids)} images" if subset is None else f"{len(keep)} of {len(ids)} images (class-stratified subset)"
        return ImageSet(
            name=f"medmnist-{self.flag}", classes=classes, images=_rgb_at(pixels[keep], image_size),
            labels=torch.from_numpy(labels[keep]), ids=tuple(ids[i] for i in keep), groups=tuple(ids[i] for i in keep),
            description=f"MedMNIST v2 {self.flag} ({root / self._file()}), {extent}, {self.size} px resized to {image_size}x{image_size}",
            assigned=tuple(assigned[i] for i in keep),
        )

    def default_data_dir(self) -> Path:
        return Path(_medmnist().info.DEFAULT_ROOT)

    def download(self, to: Path) -> Path:
        to = Path(to)
        to.mkdir(parents=True, exist_ok=True)
        medmnist = _medmnist()
        try:
            getattr(medmnist, medmnist.INFO[self.flag]["python_class"])(split="test", root=str(to), size=self.size, download=True)
        except (OSError, RuntimeError) as error:
            (to / self._file()).unlink(missing_ok=True)  # a file that failed its checksum is not kept for a later load
            raise DataError(f"downloading {self._file()} failed ({' '.join(str(error).split())[:200]}): check the network and "
                            "run the command again") from None
        return to

    def _file(self) -> str:
        return f"{self.flag}{'' if self.size == 28 else f'_{self.size}'}.npz"


def _rgb_at(pixels: np.ndarray, image_size: int) -> torch.Tensor:
    """N x H x W (gray) or N x H x W x 3 uint8 -> N x 3 x S x S uint8, resized in chunks to bound memory."""
    images = torch.from_numpy(np.ascontiguousarray(pixels))
    images = images.unsqueeze(-1).expand(*images.shape, 3) if images.ndim == 3 else images
    images = images.permute(0, 3, 1, 2)
    if images.shape[-1] == image_size:
        return images.contiguous()
    chunks = [F.interpolate(chunk.float(), size=image_size, mode="bilinear", antialias=True).round().clamp(0, 255).to(torch.uint8)
              for chunk in images.split(1024)]
    return torch.cat(chunks) if chunks else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)


def _medmnist():
    return import_optional("medmnist", "--dataset medmnist", INSTALL)


@robench.hookimpl
def register_datasets(register):
    register(MedMNIST)
