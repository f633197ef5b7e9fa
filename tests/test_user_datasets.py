"""A user's own images through the `folder` and `csv` datasets: the whole grid end to end with 3
and 10 classes, the split they fix or group, and one line for each way their files can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from robench.cli import main
from robench.core.results import read_rows
from robench.errors import DataError
from robench.pipeline.prepare import resolve_dataset

GRID = ["--backbone", "robench_vit_micro", "--image-size", "16", "--epochs", "1", "--quiet",
        "--strategies", "full,linear_probe,vpt_shallow,vpt_deep,lora", "--attacks", "fgsm,pgd:steps=2,minimal:rounds=2",
        "--eps", "2/255", "--seeds", "0"]


def write_image(path, label: int, n_classes: int, seed: int) -> None:
    """A 16x16 PNG whose hue tells its class, with noise so that no two files are equal."""
    rng = np.random.default_rng(seed)
    hue = np.array([label / n_classes, 1 - label / n_classes, (label % 3) / 2]) * 255
    pixels = np.clip(hue + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def class_folders(root, classes, per_class: int = 10) -> None:
    for label, name in enumerate(classes):
        for index in range(per_class):
            write_image(root / name / f"{name}_{index}.png", label, len(classes), seed=label * 1000 + index)


def run(tmp_path, capsys, *argv) -> tuple[int, str]:
    code = main(["run", *argv, "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    return code, capsys.readouterr().err


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_folder_dataset_with_3_classes_runs_the_whole_grid(tmp_path, capsys):
    classes = ("effusion", "normal", "pneumonia")
    class_folders(tmp_path / "xray", classes, per_class=14)
    code, err = run(tmp_path, capsys, "--dataset", "folder:positive=pneumonia", "--data-dir", str(tmp_path / "xray"), *GRID)
    assert code == 0, err
    rows = read_rows(tmp_path / "run")
    assert {row["status"] for row in rows} == {"ok"}
    assert {row["strategy"] for row in rows} == {"full", "linear_probe", "vpt_shallow", "vpt_deep", "lora"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"]["classes"] == list(classes) and config["dataset"]["malignant"] == ["pneumonia"]
    assert config["dataset"]["symmetries"] == "none"
    assert config["comparable"]["plugins"]["dataset folder"].startswith("robench ")
    clean = [row for row in rows if row["attack"] == "none"]
    assert all(set(row["clean_pred"]) <= {0, 1, 2} for row in clean)  # a 3-way head, not HAM10000's 7
    page = (tmp_path / "boards" / "run.md").read_text()
    assert "1/3 = 33.33%" in page  # chance balanced accuracy with 3 classes


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_csv_dataset_with_10_classes_and_groups_runs_the_whole_grid(tmp_path, capsys):
    root = tmp_path / "cells"
    lines = ["file,diagnosis,patient"]
    for label in range(10):
        for patient in range(4):  # two images per patient: a per-image split would leak
            for shot in range(2):
                path = f"img/c{label}/p{patient}_{shot}.png"
                write_image(root / path, label, 10, seed=label * 100 + patient * 10 + shot)
                lines.append(f"{path},class_{label},c{label}p{patient}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = "csv:path=file:label=diagnosis:group=patient"
    code, err = run(tmp_path, capsys, "--dataset", spec, "--data-dir", str(root), *GRID)
    assert code == 0, err
    rows = read_rows(tmp_path / "run")
    assert {row["status"] for row in rows} == {"ok"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(config["dataset"]["classes"]) == 10 and config["comparable"]["dataset"] == spec
    images = resolve_dataset(spec).load(root, image_size=16)
    from robench.data import split
    parts = split(images, seed=0)
    groups = np.asarray(images.groups)
    assert not set(groups[parts.train]) & set(groups[parts.test])  # no patient on two sides


def test_folder_train_and_test_folders_fix_the_split(tmp_path):
    classes = ("a", "b")
    class_folders(tmp_path / "train", classes, per_class=12)
    class_folders(tmp_path / "test", classes, per_class=3)
    images = resolve_dataset("folder").load(tmp_path, image_size=8)
    from robench.data import split
    parts = split(images, seed=0)
    test_ids = sorted(images.ids[i] for i in parts.test)
    assert test_ids == sorted(f"test/{c}/{c}_{i}.png" for c in classes for i in range(3))
    assert all(images.ids[i].startswith("train/") for i in np.concatenate([parts.train, parts.val]))
    assert len(parts.val) > 0  # held out of train/, since there is no val/


def test_a_csv_split_column_is_kept(tmp_path):
    rows = ["path,label,split"]
    for label in ("x", "y"):
        for i in range(6):
            write_image(tmp_path / f"{label}{i}.png", label == "y", 2, seed=i + 10 * (label == "y"))
            rows.append(f"{label}{i}.png,{label},{['train', 'train', 'train', 'val', 'test', 'test'][i]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    from robench.data import split
    images = resolve_dataset("csv:split=split").load(tmp_path, image_size=8)
    parts = split(images, seed=0)
    assert sorted(images.ids[i] for i in parts.test) == ["x4.png", "x5.png", "y4.png", "y5.png"]
    assert sorted(images.ids[i] for i in parts.val) == ["x3.png", "y3.png"]


def _one_class(root):
    class_folders(root, ("only",))


def _empty_class(root):
    class_folders(root, ("a", "b"))
    (root / "c").mkdir()


def _train_without_test(root):
    class_folders(root / "train", ("a", "b"))


def _csv(rows: list[str], header: str = "path,label"):
    def write(root):
        for i in range(4):
            write_image(root / f"{i}.png", i % 2, 2, seed=i)
        (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    return write


@pytest.mark.parametrize("spec, make, fragments", [
    ("folder", _one_class, ["1 class(es)", "at least 2"]),
    ("folder", _empty_class, ["class folder", "has no images"]),
    ("folder", _train_without_test, ["needs train/ and test/"]),
    ("csv", _csv(["0.png,a"], header="image,label"), ["lacks the column(s) path", "csv:path=COLUMN"]),
    ("csv:classes=a+b", _csv(["0.png,a", "1.png,b", "2.png,c"]), ["unknown label(s) c"]),
    ("csv", _csv(["0.png,a", "../1.png,b"]), ["line 3", "leaves"]),
    ("csv", _csv(["0.png,a", "9.png,b"]), ["1 of 2 images", "missing"]),
    ("csv", _csv(["0.png,a", "1.png,"]), ["line 3", "'label' is empty"]),
    ("csv:split=split", _csv(["0.png,a,train", "1.png,b,train", "2.png,a,test", "3.png,c,test"], header="path,label,split"),
     ["class(es) c in test have no training image"]),
    ("folder:positive=tumour", lambda root: class_folders(root, ("a", "b")), ["positive class(es) tumour"]),
])
def test_bad_user_data_is_one_line_before_training(tmp_path, capsys, spec, make, fragments):
    make(tmp_path / "data")
    code, err = run(tmp_path, capsys, "--dataset", spec, "--data-dir", str(tmp_path / "data"), *GRID)
    assert code == 2
    assert err.startswith("robench: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_autoattack_refuses_a_3_class_dataset_before_training(tmp_path, capsys):
    class_folders(tmp_path / "data", ("a", "b", "c"))
    code, err = run(tmp_path, capsys, "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                    "--backbone", "robench_vit_micro", "--attacks", "autoattack", "--quiet")
    assert code == 2 and "autoattack's targeted DLR loss needs at least 4 classes, this dataset has 3" in err
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_unknown_dataset_and_missing_data_dir_are_one_line(tmp_path, capsys):
    code, err = run(tmp_path, capsys, "--dataset", "folders", *GRID)
    assert code == 2 and "unknown dataset 'folders'" in err and "did you mean folder" in err and "csv" in err
    code, err = run(tmp_path, capsys, "--dataset", "folder", *GRID)
    assert code == 2 and "pass --data-dir" in err
    with pytest.raises(DataError, match="--data-dir .* is not a folder"):
        resolve_dataset("csv").load(tmp_path / "nowhere", image_size=8)


def test_list_shows_datasets_and_backbone_providers(capsys):
    assert main(["list", "--kind", "dataset"]) == 0
    out = capsys.readouterr().out
    for name in ("ham10000", "synthetic", "folder", "csv"):
        assert f"  {name} " in out
    assert "external test sets: isic2018; download: yes" in out
    assert "options: file=labels.csv, path=path, label=label, group=None, split=None" in out
    assert main(["list", "--kind", "backbone"]) == 0
    assert "  timm " in capsys.readouterr().out


def test_the_dataset_plugin_example_in_the_docs_loads(tmp_path):
    """docs/datasets.md's example plugin, run as it is written, on a labels file with patients."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "datasets.md").read_text()
    code = re.search(r"## Writing a dataset plugin.*?```python\n(.*?)```", text, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/datasets.md", "exec"), namespace)
    lines = ["path,label,patient"]
    for i in range(8):
        label = ("effusion", "normal")[i % 2]
        write_image(tmp_path / f"{i}.png", i % 2, 2, seed=i)
        lines.append(f"{i}.png,{label},p{i // 4}")
    (tmp_path / "labels.csv").write_text("\n".join(lines))
    images = namespace["ChestXray"]().load(tmp_path, image_size=8)
    assert images.classes == ("effusion", "normal") and images.images.shape == (8, 3, 8, 8)
    assert images.groups == tuple(f"p{i // 4}" for i in range(8))
