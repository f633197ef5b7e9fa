"""A user's own images listed in a CSV: one row per image with its path and label, and optionally
the group it belongs to (patient, lesion) and the part of the split it is in.

``--dataset csv --data-dir DIR`` reads ``DIR/labels.csv`` (option ``file``); paths are relative
to DIR and may not leave it. With a ``group`` column the split keeps each group on one side, as
HAM10000's lesions are kept (a per-image split of several images per patient leaks); with a
``split`` column (train/val/test) the split is the file's. ``classes=a+b+c`` declares the labels
(and their order): a row with another label is refused instead of creating a class.
"""

from __future__ import annotations

from pathlib import Path

import robench
from robench.data import read_csv
from robench.data.files import data_folder, image_set
from robench.dataset import Dataset, ImageSet, check_symmetries
from robench.errors import DataError

HINT = "fix the file, or name its columns with csv:path=COLUMN:label=COLUMN"


class Csv(Dataset):
    """Your images listed in a CSV (path, label, optional group and split columns)."""

    name = "csv"

    def __init__(self, file: str = "labels.csv", path: str = "path", label: str = "label", group: str | None = None,
                 split: str | None = None, classes: tuple[str, ...] = (), symmetries: str = "none",
                 positive: tuple[str, ...] = ()):
        self.file, self.columns = file, {"path": path, "label": label, "group": group, "split": split}
        self.classes, self.symmetries, self.positive = tuple(classes), check_symmetries(symmetries), tuple(positive)

    def load(self, data_dir: Path | None, *, image_size: int, subset: int | None = None) -> ImageSet:
        root = data_folder(data_dir, self.name)
        csv = root / self.file
        if "\0" in self.file or not csv.resolve().is_relative_to(root.resolve()):
            raise DataError(f"csv:file={self.file!r} is not a file inside {root}: name the CSV by its path in the data folder")
        table = read_csv(csv, [c for c in self.columns.values() if c], hint=HINT)
        labels = [label.strip() for label in table[self.columns["label"]]]
        for column in filter(None, (self.columns["label"], self.columns["group"], self.columns["split"])):
            empty = [i for i, value in enumerate(table[column]) if not value.strip()]
            if empty:
                raise DataError(f"{csv} line {empty[0] + 2}: column {column!r} is empty ({len(empty)} rows): {HINT}")
        classes = self.classes or tuple(sorted(set(labels)))
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise DataError(f"{csv}: unknown label(s) {', '.join(unknown)} (classes={'+'.join(classes)}): "
                            "fix the labels or add them to the classes option")
        files = [_inside(root, csv, line, text) for line, text in enumerate(table[self.columns["path"]], start=2)]
        seen: dict[Path, tuple[int, str]] = {}
        for line, (path, label) in enumerate(zip(files, labels), start=2):
            if path in seen:
                first, before = seen[path]
                also = f"under labels {before!r} and {label!r}" if before != label else "twice"
                raise DataError(f"{csv} lines {first} and {line} list {path.name} {also}: list each image once, with its one label")
            seen[path] = (line, label)
        missing = [path for path in files if not path.is_file()]
        if missing:
            raise DataError(f"{len(missing)} of {len(files)} images listed in {csv} are missing (first: {missing[0]}): "
                            "fix the paths (relative to the CSV's folder)")
        column = self.columns
        return image_set(
            self.name, files, labels, classes=classes, image_size=image_size, subset=subset, source=f"CSV {csv}",
            ids=[path.relative_to(root.resolve()).as_posix() for path in files],
            groups=list(table[column["group"]]) if column["group"] else None,
            assigned=[value.strip() for value in table[column["split"]]] if column["split"] else None,
        )


def _inside(root: Path, csv: Path, line: int, text: str) -> Path:
    """The file a row names, refused when it lies outside the data folder (``../``, absolute paths, links out)."""
    if "\0" in text:
        raise DataError(f"{csv} line {line}: path {text!r} holds a NUL character: fix the path")
    path = (root / text.strip()).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(f"{csv} line {line}: path {text!r} leaves {root}: list files inside the data folder")
    return path


@robench.hookimpl
def register_datasets(register):
    register(Csv)
