"""A user's own images laid out one sub-folder per class, like torchvision's ImageFolder.

``DIR/<class>/*.png`` (any depth below the class folder), or ``DIR/train/<class>/...``,
``DIR/test/<class>/...`` and optionally ``DIR/val/<class>/...`` to fix the split (without
``val/``, validation images are held out of ``train/``). Class order is alphabetical. Each
image is its own group: when several images show one patient or lesion, use the ``csv``
dataset with a group column, or the split leaks.
"""

from __future__ import annotations

from pathlib import Path

import robench
from robench.data.files import IMAGE_SUFFIXES, data_folder, image_set
from robench.dataset import SPLITS, Dataset, ImageSet, check_symmetries
from robench.errors import DataError


class Folder(Dataset):
    """Your images, one sub-folder per class (inside train/ val/ test/ to fix the split)."""

    name = "folder"

    def __init__(self, symmetries: str = "none", positive: tuple[str, ...] = ()):
        self.symmetries = check_symmetries(symmetries)
        self.positive = tuple(positive)

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        root = data_folder(data_dir, self.name)
        parts = [part for part in SPLITS if (root / part).is_dir()]
        if parts and not {"train", "test"} <= set(parts):
            raise DataError(f"{root} has {'/, '.join(parts)}/ but a fixed split needs train/ and test/ (val/ is optional): "
                            f"add the missing folder, or put the class folders directly in {root}")
        found = {part: class_files(root / part) for part in parts} if parts else {None: class_files(root)}
        loose = [f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()] if not parts else []
        if loose and not any(found.values()):
            raise DataError(f"{root} holds {len(loose)} images directly and no class folders: put each class's images in "
                            f"a folder named after the class ({root}/<class>/...), or use --dataset csv with a label column")
        classes = sorted({name for by_class in found.values() for name in by_class})
        entries = [(path, name, part) for part, by_class in found.items() for name, paths in by_class.items() for path in paths]
        return image_set(
            self.name, [path for path, _, _ in entries], [name for _, name, _ in entries], classes=classes,
            image_size=image_size, subset=subset, source=str(root),
            ids=[path.relative_to(root).as_posix() for path, _, _ in entries],
            assigned=[part for _, _, part in entries] if parts else None,
        )


def class_files(folder: Path) -> dict[str, list[Path]]:
    """Each class folder's image files, sorted; hidden files and folders are skipped."""
    classes = sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))
    found = {}
    for path in classes:
        if path.is_symlink() and folder.resolve().is_relative_to(path.resolve()):
            raise DataError(f"class folder {path} links to {path.resolve()}, which holds the dataset itself: every image "
                            "would become one of its images; replace the link by the class's own folder")
        files = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(path).parts))
        if not files:
            raise DataError(f"class folder {path} has no images ({', '.join(IMAGE_SUFFIXES)}): add images or remove the folder")
        found[path.name] = files
    return found


@robench.hookimpl
def register_datasets(register):
    register(Folder)
