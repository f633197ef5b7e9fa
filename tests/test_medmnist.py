"""The medmnist dataset on small .npz files made here in the package's layout (no network): read
through the medmnist package, its split kept, run end to end, and fetched from a local server."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from robench.cli import main
from robench.core.results import read_rows
from robench.data import split
from robench.pipeline.prepare import resolve_dataset

medmnist = pytest.importorskip("medmnist")

COUNTS = {"train": 6, "val": 2, "test": 3}  # images per class and split


def write_npz(folder, flag: str, size: int = 28, gray: bool = False):
    """``<flag>[_<size>].npz`` with the keys the package reads: {split}_images, {split}_labels (N x 1)."""
    n_classes = len(medmnist.INFO[flag]["label"])
    rng = np.random.default_rng(0)
    arrays = {}
    for part, per_class in COUNTS.items():
        labels = np.repeat(np.arange(n_classes), per_class)
        shape = (len(labels), size, size) if gray else (len(labels), size, size, 3)
        base = (labels * (200 // n_classes)).reshape(-1, *([1] * (len(shape) - 1)))
        arrays[f"{part}_images"] = np.clip(base + rng.integers(0, 30, shape), 0, 255).astype(np.uint8)
        arrays[f"{part}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    path = folder / f"{flag}{'' if size == 28 else f'_{size}'}.npz"
    np.savez(path, **arrays)
    return path


def test_dermamnist_keeps_its_split_classes_and_symmetries(tmp_path):
    write_npz(tmp_path, "dermamnist")
    dataset = resolve_dataset("medmnist:flag=dermamnist")
    images = dataset.load(tmp_path, image_size=32)
    assert images.classes[4] == "melanoma" and len(images.classes) == 7
    assert images.images.shape == (7 * 11, 3, 32, 32)
    parts = split(images, seed=0)
    assert [len(parts.train), len(parts.val), len(parts.test)] == [42, 14, 21]
    assert all(images.ids[i].startswith("test_") for i in parts.test)
    assert dataset.symmetries == "dihedral" and "melanoma" in dataset.positive


def test_a_grayscale_binary_set_becomes_rgb_at_the_run_size(tmp_path):
    write_npz(tmp_path, "pneumoniamnist", size=64, gray=True)
    dataset = resolve_dataset("medmnist:flag=pneumoniamnist:size=64")
    images = dataset.load(tmp_path, image_size=16)
    assert images.classes == ("normal", "pneumonia") and images.images.shape[1:] == (3, 16, 16)
    assert (images.images[:, 0] == images.images[:, 1]).all() and dataset.positive == ("pneumonia",)
    assert dataset.symmetries == "none"  # a chest radiograph keeps its left and right


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_medmnist_run_end_to_end(tmp_path, capsys):
    write_npz(tmp_path, "bloodmnist")
    code = main(["run", "--dataset", "medmnist:flag=bloodmnist", "--data-dir", str(tmp_path), "--backbone", "robench_vit_micro",
                 "--image-size", "32", "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--seeds", "0",
                 "--epochs", "1", "--quiet", "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(tmp_path / "run")
    assert {row["status"] for row in rows} == {"ok"} and rows[0]["n_attacked"] == 8 * COUNTS["test"]


@pytest.mark.parametrize("spec, fragment", [
    ("medmnist:flag=chestmnist", "flag must be a 2D single-label MedMNIST set"),
    ("medmnist:size=100", "size must be one of 28, 64, 128, 224"),
    ("medmnist:flag=dermamnist:size=64", "no dermamnist_64.npz in"),
])
def test_bad_medmnist_input_is_one_line(tmp_path, capsys, spec, fragment):
    write_npz(tmp_path, "dermamnist")
    code = main(["run", "--dataset", spec, "--data-dir", str(tmp_path), "--backbone", "robench_vit_micro", "--quiet",
                 "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and err.count("\n") == 1, err


def test_download_fetches_and_verifies_the_npz_from_a_server(tmp_path, monkeypatch, capsys):
    served = tmp_path / "server"
    served.mkdir()
    source = write_npz(served, "dermamnist")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    info = dict(medmnist.INFO["dermamnist"], url=f"http://127.0.0.1:{server.server_port}/dermamnist.npz",
                MD5=hashlib.md5(source.read_bytes()).hexdigest())
    monkeypatch.setitem(medmnist.INFO, "dermamnist", info)
    try:
        assert main(["data", "download", "medmnist:flag=dermamnist", "--to", str(tmp_path / "got")]) == 0
        assert (tmp_path / "got" / "dermamnist.npz").read_bytes() == source.read_bytes()
        monkeypatch.setitem(medmnist.INFO, "dermamnist", dict(info, MD5="0" * 32))  # a damaged download is refused
        (tmp_path / "got" / "dermamnist.npz").unlink()
        assert main(["data", "download", "medmnist:flag=dermamnist", "--to", str(tmp_path / "got")]) == 2
        assert "downloading dermamnist.npz failed" in capsys.readouterr().err
        assert not (tmp_path / "got" / "dermamnist.npz").exists()
    finally:
        server.shutdown()
    assert main(["data", "download", "folder"]) == 2
    assert "cannot be downloaded by robench" in capsys.readouterr().err


def test_without_the_extra_installed_the_dataset_says_how_to_get_it(monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "medmnist", None)  # as if it were not installed
    code = main(["run", "--dataset", "medmnist", "--backbone", "robench_vit_micro", "--quiet",
                 "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path / "boards")])
    err = capsys.readouterr().err
    assert code == 2 and 'needs the medmnist package: pip install "robench[medmnist]"' in err and err.count("\n") == 1
