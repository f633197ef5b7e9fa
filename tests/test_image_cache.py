"""The decoded-image cache cannot poison a run: a damaged, reshaped, swapped or forged file is
reported in one line and rebuilt, a folder others can write to is not used, a full disk leaves no
file and the run goes on, and `robench cache` shows and clears it without following links."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from PIL import Image

from robench.cli import main
from robench.core.results import read_rows
from robench.data import images

SIZE = 8
DECODE = images.decode_image  # before a test counts its calls


@pytest.fixture(autouse=True)
def loud(tmp_path, monkeypatch):
    """A private cache, and the one-line notices printed (conftest silences them)."""
    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ROBENCH_QUIET", raising=False)


@pytest.fixture
def files(tmp_path) -> list:
    """Six 12x12 PNGs, each a different flat colour, so swapped pixels show."""
    paths = []
    for index in range(6):
        path = tmp_path / "images" / f"{index}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (12, 12), (40 * index, 255 - 40 * index, 7 * index)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def decodes(monkeypatch) -> list:
    calls, decode = [], images.decode_image
    monkeypatch.setattr(images, "decode_image", lambda path, size: calls.append(path) or decode(path, size))
    return calls


def cache_files() -> list:
    return sorted(images.cache_dir().iterdir()) if images.cache_dir().is_dir() else []


def expected(paths) -> torch.Tensor:
    return torch.from_numpy(np.stack([DECODE(path, SIZE) for path in paths]))


def damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero length":
        path.write_bytes(b"")
    elif how == "bad header":
        path.write_bytes(b"not an npy file" + data[15:])
    elif how == "other shape":
        with open(path, "wb") as f:
            np.save(f, np.zeros((2, 3, SIZE, SIZE), dtype=np.uint8))
    elif how == "other dtype":
        with open(path, "wb") as f:
            np.save(f, np.zeros((6, 3, SIZE, SIZE), dtype=np.float32))
    else:  # other pixels of the same shape: another set's cache copied over this one
        swapped = np.load(path)[::-1].copy()
        with open(path, "wb") as f:
            np.save(f, swapped)


@pytest.mark.parametrize("how", ["truncated", "zero length", "bad header", "other shape", "other dtype", "other pixels"])
def test_a_damaged_cache_is_reported_in_one_line_and_rebuilt(files, decodes, capsys, how):
    first = images.load_images(files, SIZE)
    [cached] = cache_files()
    damage(cached, how)
    capsys.readouterr()

    again = images.load_images(files, SIZE)
    notices = capsys.readouterr().out.splitlines()
    assert len(notices) == 1 and "not used" in notices[0] and "decoding the images again" in notices[0], notices
    checked = 6 if how == "other pixels" else 0  # a file of the right shape: its sample is decoded anew first
    assert len(decodes) == 12 + checked and torch.equal(again, first) and torch.equal(again, expected(files))
    assert [p.name for p in cache_files()] == [cached.name]  # rebuilt under the same key

    assert torch.equal(images.load_images(files, SIZE), first) and len(decodes) == 18 + checked  # read back, its sample checked


def test_a_cache_is_named_by_its_key_and_is_a_plain_npy_in_a_private_folder(files):
    pixels = images.load_images(files, SIZE).numpy()
    [cached] = cache_files()
    assert cached.name == f"{images._cache_key(files, SIZE)}.npy"
    assert np.array_equal(np.load(cached), pixels)  # a plain .npy anyone can read
    assert images.cache_dir().stat().st_mode & 0o077 == 0


def test_a_forged_entry_with_one_image_changed_is_caught_by_the_sample(tmp_path, decodes, capsys):
    """Every image is in the sample of a set this small: one planted image is enough to refuse the file."""
    paths = []
    for index in range(images.SAMPLE):
        paths.append(tmp_path / "many" / f"{index}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.new("RGB", (12, 12), (index, 2 * index, 3 * index)).save(paths[-1])
    honest = images.load_images(paths, SIZE)
    [cached] = cache_files()
    forged = honest.numpy().copy()
    forged[17] = 255 - forged[17]  # a planted image, the rest untouched
    with open(cached, "wb") as f:
        np.save(f, forged)
    capsys.readouterr()
    assert torch.equal(images.load_images(paths, SIZE), honest)
    assert "1 of 64 images decoded anew from their files differ from it" in capsys.readouterr().out


def test_a_cache_folder_others_can_write_to_is_not_used(files, decodes, capsys):
    images.load_images(files, SIZE)
    os.chmod(images.cache_dir(), 0o777)
    [cached] = cache_files()
    before = cached.stat().st_mtime_ns
    capsys.readouterr()
    assert torch.equal(images.load_images(files, SIZE), expected(files)) and len(decodes) == 12  # decoded, not read
    notices = capsys.readouterr().out.splitlines()
    assert len(notices) == 1 and "not used: other users can write to it (mode 777)" in notices[0], notices
    assert cached.stat().st_mtime_ns == before  # nor written


def test_cache_clear_does_not_follow_a_linked_folder(tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "precious.npy").write_bytes(b"keep me")
    images.cache_dir().parent.mkdir(parents=True)
    images.cache_dir().symlink_to(outside)
    assert main(["cache", "clear"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a symbolic link" in err and "Traceback" not in err
    assert (outside / "precious.npy").read_bytes() == b"keep me"


def test_a_full_disk_leaves_no_file_and_the_images_are_still_returned(files, decodes, capsys, monkeypatch):
    def half_then_full(f, array):
        f.write(array.tobytes()[: array.nbytes // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    save = np.save
    monkeypatch.setattr(np, "save", half_then_full)
    pixels = images.load_images(files, SIZE)
    notices = capsys.readouterr().out.splitlines()
    assert torch.equal(pixels, expected(files)) and cache_files() == []
    assert len(notices) == 1 and "not saved (No space left on device)" in notices[0], notices

    monkeypatch.setattr(np, "save", save)
    images.load_images(files, SIZE)
    assert len(decodes) == 12 and len(cache_files()) == 1  # the next load decodes and saves


def test_a_run_goes_on_when_the_cache_cannot_be_written(tmp_path, capsys, monkeypatch):
    from tests.test_user_datasets import class_folders

    class_folders(tmp_path / "data", ("a", "b"), per_class=8)
    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])  # matplotlib is 80% of this run's time
    monkeypatch.setattr(np, "save", lambda f, array: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    code = main(["run", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--backbone", "robench_vit_micro",
                 "--image-size", "16", "--epochs", "1", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "2/255",
                 "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len([line for line in out.splitlines() if "image cache" in line and "not saved" in line]) == 1, out
    assert {row["status"] for row in read_rows(tmp_path / "run")} == {"ok"} and cache_files() == []


def test_cache_info_shows_the_folder_and_size_and_clear_empties_it(files, decodes, capsys):
    images.load_images(files, SIZE)
    leftover = images.cache_dir() / ".abc.npy.123.partial"  # what a killed run leaves
    leftover.write_bytes(b"x" * 100)
    size = sum(path.stat().st_size for path in cache_files())
    capsys.readouterr()

    assert main(["cache"]) == 0
    info = capsys.readouterr().out
    assert str(images.cache_dir()) in info and "2 files" in info and f"{size / 1e9:.2f} GB" in info

    assert main(["cache", "clear"]) == 0
    assert "2 files" in capsys.readouterr().out and cache_files() == []
    images.load_images(files, SIZE)
    assert len(decodes) == 12  # decoded again after the clear
