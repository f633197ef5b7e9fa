"""Issue 24, family 5: images and tables that could mislead or crash a dataset: a header claiming a
huge image, a CSV outside the data folder, a NUL in a path, one image under two labels, and a class
folder that links back to the dataset."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import pytest
from PIL import Image

from robench.cli import main
from robench.data.images import decode_image
from robench.errors import DataError
from robench.pipeline.prepare import resolve_dataset
from tests.test_user_datasets import class_folders


def png_claiming(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header (IHDR, with its CRC) claims ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR's width and height, after the signature, length and type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the CRC of type and data
    return bytes(data)


@pytest.mark.parametrize("side", [20000, 12000])  # PIL's error (above twice its limit) and its warning (above it)
def test_an_image_whose_header_claims_a_huge_size_is_one_line(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(side, side))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(DataError, match="more than is safe to decode"):
        warnings.simplefilter("always")
        decode_image(path, 32)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_huge_image_in_a_folder_dataset_stops_the_run_in_one_line(tmp_path, capsys):
    class_folders(tmp_path / "data", ["a", "b"], per_class=6)
    (tmp_path / "data" / "a" / "bomb.png").write_bytes(png_claiming(20000, 20000))
    code = main(["run", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--backbone", "robench_vit_micro",
                 "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--seeds", "0",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "bomb.png claims more than" in err


def csv_dataset(tmp_path, rows: list[str], options: str = ""):
    class_folders(tmp_path / "data", ["a", "b"], per_class=3)
    (tmp_path / "data" / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return resolve_dataset("csv" + options)


def test_a_csv_outside_the_data_folder_is_refused_without_reading_it(tmp_path):
    (tmp_path / "secret.csv").write_text("password,hunter2\n")
    dataset = csv_dataset(tmp_path, ["a/a_0.png,a"], ":file=../secret.csv")
    with pytest.raises(DataError, match="is not a file inside") as caught:
        dataset.load(tmp_path / "data", image_size=32)
    assert "hunter2" not in str(caught.value) and "password" not in str(caught.value)


@pytest.mark.parametrize(("rows", "message"), [
    (["a/a_0.png,a", "a/a_0.png,b"], "lines 2 and 3 list a_0.png under labels 'a' and 'b'"),
    (["a/a_0.png,a", "a/a_0.png,a"], "lines 2 and 3 list a_0.png twice"),
    (["a/a_\0.png,a"], "holds a NUL character"),
])
def test_a_csv_lists_each_image_once_with_a_path_it_can_name(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        csv_dataset(tmp_path, rows).load(tmp_path / "data", image_size=32)


def test_a_class_folder_linking_back_to_the_dataset_is_refused(tmp_path):
    class_folders(tmp_path / "data", ["a", "b"], per_class=3)
    (tmp_path / "data" / "everything").symlink_to(tmp_path / "data")
    with pytest.raises(DataError, match="holds the dataset itself"):
        resolve_dataset("folder").load(tmp_path / "data", image_size=32)


def test_a_class_too_small_for_the_test_split_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBENCH_QUIET", raising=False)  # conftest silences notices
    class_folders(tmp_path / "data", ["a", "b"], per_class=20)
    class_folders(tmp_path / "data", ["rare"], per_class=1)
    from robench.data.split import split

    images = resolve_dataset("folder").load(tmp_path / "data", image_size=16)
    capsys.readouterr()
    found = split(images, seed=0)
    lines = capsys.readouterr().out.splitlines()
    rare = images.classes.index("rare")
    assert rare not in images.labels[found.test].tolist()
    assert any("no test image of class(es) rare (1 image in all)" in line and "over the other 2 classes" in line
               for line in lines), lines


def test_file_and_folder_names_that_are_not_utf8_load_or_stop_in_one_line(tmp_path, capsys):
    class_folders(tmp_path / "data", ["a", "b"], per_class=10)
    odd = bytes(tmp_path / "data" / "a") + b"/\xff\xfe.png"  # a name no UTF-8 decoder reads
    (tmp_path / "data" / "a" / "a_0.png").rename(odd.decode("utf-8", "surrogateescape"))
    (tmp_path / "data" / "b").rename((bytes(tmp_path / "data") + b"/b\xe9").decode("utf-8", "surrogateescape"))  # a Latin-1 class name
    code = main(["run", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--backbone", "robench_vit_micro",
                 "--image-size", "16", "--epochs", "1", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                 "--escalation", "off", "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 0, err
    page = (tmp_path / "run" / "leaderboard.md").read_text()  # valid UTF-8: the odd bytes are shown escaped
    assert "b\\xe9" in page  # the class: its byte written out


def test_a_flat_folder_of_images_says_it_found_them_and_wants_class_folders(tmp_path):
    class_folders(tmp_path / "data", ["a"], per_class=4)
    for path in (tmp_path / "data" / "a").iterdir():
        path.rename(tmp_path / "data" / path.name)
    (tmp_path / "data" / "a").rmdir()
    with pytest.raises(DataError, match="holds 4 images directly and no class folders: put each class's images in a folder"):
        resolve_dataset("folder").load(tmp_path / "data", image_size=16)


def test_a_folder_run_says_its_split_is_per_image_and_names_the_folder_once(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])
    class_folders(tmp_path / "data", ["a", "b"], per_class=10)
    assert main(["run", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--backbone", "robench_vit_micro",
                 "--image-size", "16", "--epochs", "1", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                 "--escalation", "off", "--out", str(tmp_path / "run")]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["split"]["test_set"].startswith("per-image split of the dataset")
    page = (tmp_path / "run" / "leaderboard.md").read_text()
    assert f"folder: {tmp_path / 'data'}, 20 images" in page and "folder folder" not in page
