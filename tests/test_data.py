"""The data layer on tiny generated releases, the synthetic set, and (when present) the real data."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from torch.overrides import TorchFunctionMode

import robench.data.images
from robench.data import ImageSet, split
from robench.errors import DataError, PluginError
from robench.pipeline.prepare import resolve_dataset
from robench_plugins.datasets.ham10000 import CLASSES as HAM10000_CLASSES
from robench_plugins.datasets.ham10000.isic2018 import load_isic2018_test
from robench_plugins.datasets.ham10000.release import (
    MIN_LESIONS_PER_CLASS,
    select_lesions,
)
from robench_plugins.datasets.synthetic import load_synthetic

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load(name: str, *, data_dir=None, image_size: int, subset: int | None = None):
    """A dataset plugin's images, found by name in the registry as a run finds them."""
    return resolve_dataset(name).load(data_dir, image_size=image_size, subset=subset)

# One flat colour per class, far apart, so a decoded image shows which file it came from.
COLOURS = {"akiec": (220, 40, 40), "bcc": (40, 220, 40), "bkl": (40, 40, 220), "df": (220, 220, 40),
           "mel": (20, 20, 20), "nv": (140, 90, 40), "vasc": (220, 40, 220)}
# (lesion_id, dx, images): every class, two lesions with several images.
LESIONS = [("HAM_0000001", "nv", 3), ("HAM_0000002", "nv", 1), ("HAM_0000003", "mel", 2), ("HAM_0000004", "bkl", 1),
           ("HAM_0000005", "bcc", 1), ("HAM_0000006", "akiec", 1), ("HAM_0000007", "vasc", 1), ("HAM_0000008", "df", 1),
           ("HAM_0000009", "nv", 1)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache or data folder."""
    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ROBENCH_DATA_DIR", raising=False)


def write_jpeg(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 15), colour).save(path, quality=95)


def write_release(root: Path, lesions=LESIONS, *, layout: str = "images") -> pd.DataFrame:
    """A HAM10000-shaped folder: metadata CSV plus 20x15 JPEGs, in one folder or split over two."""
    metadata = pd.DataFrame([(lesion, dx) for lesion, dx, count in lesions for _ in range(count)],
                            columns=["lesion_id", "dx"]).assign(age=50.0, sex="male")
    metadata.insert(1, "image_id", [f"ISIC_{1000 + number:07d}" for number in range(len(metadata))])
    root.mkdir(parents=True, exist_ok=True)
    metadata.to_csv(root / "HAM10000_metadata.csv", index=False)
    for number, row in enumerate(metadata.itertuples()):
        folder = "images" if layout == "images" else f"HAM10000_images_part_{1 + number % 2}"
        write_jpeg(root / folder / f"{row.image_id}.jpg", COLOURS[row.dx])
    return metadata


def mean_colour(images: torch.Tensor) -> np.ndarray:
    return images.float().mean(dim=(2, 3)).numpy()


def assert_one_line_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- HAM10000 -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["images", "parts"])
def test_load_ham10000_reads_either_release_layout(tmp_path, layout):
    metadata = write_release(tmp_path / "ham", layout=layout)
    data = load("ham10000", data_dir=tmp_path / "ham", image_size=32)

    assert data.images.shape == (12, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.ids == tuple(metadata["image_id"]) and data.groups == tuple(metadata["lesion_id"])
    assert [HAM10000_CLASSES[label] for label in data.labels] == list(metadata["dx"])
    expected = np.array([COLOURS[dx] for dx in metadata["dx"]])
    assert np.abs(mean_colour(data.images) - expected).max() < 12  # each image is its own file's pixels
    assert data.description == f"HAM10000 ({tmp_path / 'ham'}), 12 images, 32x32"


def test_data_dir_defaults_to_environment_variable(tmp_path, monkeypatch):
    write_release(tmp_path / "elsewhere")
    monkeypatch.setenv("ROBENCH_DATA_DIR", str(tmp_path / "elsewhere"))
    assert len(load("ham10000", image_size=8)) == 12


def test_missing_data_dir_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load("ham10000", data_dir=tmp_path / "nothing", image_size=8)
    assert_one_line_error(excinfo, str(tmp_path / "nothing"), "robench data download ham10000", "--data-dir",
                          "ROBENCH_DATA_DIR", "--dataset synthetic")


def _drop_metadata(root: Path) -> None:
    (root / "HAM10000_metadata.csv").unlink()


def _drop_dx_column(root: Path) -> None:
    pd.read_csv(root / "HAM10000_metadata.csv").drop(columns="dx").to_csv(root / "HAM10000_metadata.csv", index=False)


def _rename_a_class(root: Path) -> None:
    metadata = pd.read_csv(root / "HAM10000_metadata.csv")
    metadata.loc[3, "dx"] = "melanoma"
    metadata.to_csv(root / "HAM10000_metadata.csv", index=False)


def _drop_an_image(root: Path) -> None:
    (root / "images" / "ISIC_0001004.jpg").unlink()


def _truncate_an_image(root: Path) -> None:
    path = root / "images" / "ISIC_0001005.jpg"
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("damage, fragments", [
    (_drop_metadata, ["HAM10000_metadata.csv not found", "robench data download ham10000"]),
    (_drop_dx_column, ["lacks the column(s) dx"]),
    (_rename_a_class, ["unknown dx value(s) melanoma", "akiec, bcc"]),
    (_drop_an_image, ["1 of 12 images", "ISIC_0001004", "robench data download ham10000"]),
    (_truncate_an_image, ["cannot decode image", "ISIC_0001005.jpg"]),
])
def test_a_broken_release_gives_a_one_line_error(tmp_path, damage, fragments):
    write_release(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataError) as excinfo:
        load("ham10000", data_dir=tmp_path, image_size=8)
    assert_one_line_error(excinfo, *fragments)


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(PluginError) as excinfo:
        load("cifar10", image_size=8)
    assert_one_line_error(excinfo, "unknown dataset 'cifar10'", "csv, folder", "ham10000", "synthetic")


# --- decoding cache -------------------------------------------------------------------------

@pytest.fixture
def decode_calls(monkeypatch) -> list[Path]:
    """Every file decode_image is asked for, in order."""
    calls = []
    decode = robench.data.images.decode_image

    def counting(path, image_size):
        calls.append(path)
        return decode(path, image_size)

    monkeypatch.setattr(robench.data.images, "decode_image", counting)
    return calls


def test_a_second_load_reads_the_cache_instead_of_decoding(tmp_path, decode_calls, monkeypatch):
    from robench.data import images

    monkeypatch.setattr(images, "SAMPLE", 3)  # the images decoded anew to check the file (all 12 by default)
    write_release(tmp_path)
    first = load("ham10000", data_dir=tmp_path, image_size=16)
    assert len(decode_calls) == 12 and any((tmp_path / "cache" / "images").glob("*.npy"))

    second = load("ham10000", data_dir=tmp_path, image_size=16)
    assert len(decode_calls) == 12 + 3  # the sample only
    assert torch.equal(first.images, second.images)

    load("ham10000", data_dir=tmp_path, image_size=24)  # another size is another cache entry
    assert len(decode_calls) == 27


def test_a_changed_file_is_decoded_again(tmp_path, decode_calls):
    write_release(tmp_path)
    before = load("ham10000", data_dir=tmp_path, image_size=16)
    changed = tmp_path / "images" / "ISIC_0001000.jpg"
    write_jpeg(changed, (255, 255, 255))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))  # also on filesystems with coarse mtimes

    after = load("ham10000", data_dir=tmp_path, image_size=16)
    assert len(decode_calls) == 24
    assert mean_colour(after.images[:1]).min() > 240 > mean_colour(before.images[:1]).max()


# --- lesion subsets -------------------------------------------------------------------------

def ham_like_metadata(n_lesions: int = 900, seed: int = 1) -> pd.DataFrame:
    """Metadata only: HAM10000's class shares, one to three images per lesion."""
    rng = np.random.default_rng(seed)
    shares = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015
    rows = [(f"HAM_{lesion:07d}", f"ISIC_{lesion:07d}_{copy}", dx)
            for lesion, dx in enumerate(rng.choice(HAM10000_CLASSES, size=n_lesions, p=shares))
            for copy in range(rng.integers(1, 4))]
    return pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx"])


def test_lesion_subset_is_deterministic_stratified_and_keeps_lesions_whole():
    metadata = ham_like_metadata()
    chosen = select_lesions(metadata, 200)
    subset = metadata.iloc[chosen]

    assert np.array_equal(chosen, select_lesions(metadata, 200))
    assert not np.array_equal(chosen, select_lesions(metadata, 200, seed=1))
    assert 170 <= len(subset) <= 240
    whole = metadata[metadata["lesion_id"].isin(subset["lesion_id"])]
    assert len(whole) == len(subset)  # no lesion is cut
    lesions_per_class = subset.groupby("dx")["lesion_id"].nunique()
    available = metadata.groupby("dx")["lesion_id"].nunique()
    assert (lesions_per_class >= np.minimum(MIN_LESIONS_PER_CLASS, available)).all()
    assert 0.55 < (subset["dx"] == "nv").mean() < 0.75


def test_subset_decodes_only_the_chosen_images(tmp_path, decode_calls):
    many_nevi = [(f"HAM_00001{index:02d}", "nv", 2) for index in range(15)] + \
        [(f"HAM_00002{index:02d}", dx, 1) for index, dx in enumerate(HAM10000_CLASSES) if dx != "nv"]
    write_release(tmp_path, many_nevi)
    data = load("ham10000", data_dir=tmp_path, image_size=8, subset=10)

    # nv: 5 lesions (the minimum) of 2 images; every other class: its only lesion.
    assert len(data) == 16 and len(decode_calls) == 16
    assert set(data.labels.tolist()) == set(range(7))
    assert "16 of 36 images (class-stratified lesion subset, seed 0), 8x8" in data.description


# --- ISIC 2018 test set ---------------------------------------------------------------------

def test_isic2018_test_skips_and_reports_missing_images(tmp_path):
    truth = pd.DataFrame({"image": ["ISIC_0034524", "ISIC_0034525", "ISIC_0034526", "ISIC_0034527"]})
    for column in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"):
        truth[column] = 0.0
    truth.loc[[0, 1], "NV"] = 1.0
    truth.loc[2, "MEL"] = 1.0
    truth.loc[3, "DF"] = 1.0
    truth.to_csv(tmp_path / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    for image_id, dx in [("ISIC_0034525", "nv"), ("ISIC_0034526", "mel"), ("ISIC_0034527", "df")]:
        write_jpeg(tmp_path / "images" / f"{image_id}.jpg", COLOURS[dx])

    data = load_isic2018_test(tmp_path, image_size=16)
    assert data.ids == ("ISIC_0034525", "ISIC_0034526", "ISIC_0034527") and data.groups == data.ids
    assert [HAM10000_CLASSES[label] for label in data.labels] == ["nv", "mel", "df"]
    assert np.abs(mean_colour(data.images) - np.array([COLOURS["nv"], COLOURS["mel"], COLOURS["df"]])).max() < 12
    assert "3 of 4 images; 1 missing (ISIC_0034524), 16x16" in data.description


def test_isic2018_test_without_ground_truth_says_what_is_missing(tmp_path):
    with pytest.raises(DataError) as excinfo:
        load_isic2018_test(tmp_path, image_size=16)
    assert_one_line_error(excinfo, "ISIC2018_Task3_Test_GroundTruth.csv not found")


# --- synthetic ------------------------------------------------------------------------------

class _TorchCalls(TorchFunctionMode):
    """Counts the torch functions and tensor methods called inside it."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def torch_calls(fn) -> int:
    with _TorchCalls() as counted:
        fn()
    return counted.calls


def test_synthetic_is_deterministic_imbalanced_and_drawn_in_one_pass(monkeypatch):
    """Fast by construction, counted rather than timed (a time limit fails on a busy machine): all
    images are drawn in one batch of tensor operations, as many torch calls for 2,000 images as for
    200 (no loop per image), at most 64 px and then upsampled."""
    import robench_plugins.datasets.synthetic as synthetic

    small, large = (torch_calls(lambda n=n: load_synthetic(image_size=32, size=n)) for n in (200, 2000))
    assert small == large < 500, (small, large)
    drawn, draw = [], synthetic._draw
    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "_draw", lambda *args: drawn.append(args[3]) or draw(*args))  # args[3]: the size drawn
        assert load("synthetic", image_size=224).images.shape[-1] == 224
    assert drawn == [synthetic._MAX_RENDER_SIZE] == [64]

    data = load("synthetic", image_size=32)
    again = load_synthetic(image_size=32)

    assert torch.equal(data.images, again.images) and torch.equal(data.labels, again.labels)
    assert data.images.shape == (len(data), 3, 32, 32) and data.images.dtype == torch.uint8
    assert 650 <= len(data) <= 760 and data.classes == HAM10000_CLASSES
    counts = torch.bincount(data.labels, minlength=7)
    assert counts.argmax() == HAM10000_CLASSES.index("nv") and 0.55 < counts[5] / len(data) < 0.72
    images_per_lesion = pd.Series(data.groups).value_counts()
    assert images_per_lesion.between(2, 3).all()
    assert pd.Series(data.groups).groupby(data.labels.numpy()).nunique().min() >= 8
    assert len(load_synthetic(image_size=16, size=300)) < 400
    assert not torch.equal(load_synthetic(image_size=32, seed=1).images[:10], data.images[:10])


def test_synthetic_classes_differ_in_colour_and_texture_not_in_position():
    """Position-free image statistics separate the classes well on a lesion-grouped test split."""
    data = load("synthetic", image_size=32)
    parts = split(data)
    pixels = data.images.float() / 255
    vertical_edges = (pixels[..., 1:, :] - pixels[..., :-1, :]).abs().mean(dim=(2, 3))
    features = torch.cat([pixels.mean(dim=(2, 3)), pixels.std(dim=(2, 3)), pixels.amin(dim=(2, 3)),
                          vertical_edges], dim=1).numpy()
    labels = data.labels.numpy()
    model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(features[parts.train], labels[parts.train])
    assert balanced_accuracy_score(labels[parts.test], model.predict(features[parts.test])) > 0.6


# --- split ----------------------------------------------------------------------------------

def assert_grouped_partition(data: ImageSet, parts) -> None:
    sides = [parts.train, parts.val, parts.test]
    assert np.array_equal(np.sort(np.concatenate(sides)), np.arange(len(data)))
    groups = [set(np.asarray(data.groups)[side]) for side in sides]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])


def test_split_is_grouped_stratified_and_reproducible():
    data = load("synthetic", image_size=8)
    parts = split(data, seed=3)

    assert_grouped_partition(data, parts)
    assert abs(len(parts.test) / len(data) - 0.15) < 0.04 and abs(len(parts.val) / len(data) - 0.15) < 0.04
    assert set(data.labels[parts.test].tolist()) == set(range(7))  # every class, even with 8 lesions
    expected = hashlib.sha256("\n".join(sorted(data.ids[i] for i in parts.test)).encode()).hexdigest()[:12]
    assert parts.fingerprint == expected and parts.seed == 3

    again = split(data, seed=3)
    assert np.array_equal(again.test, parts.test) and np.array_equal(again.val, parts.val)
    assert split(data, seed=4).fingerprint != parts.fingerprint


@pytest.mark.parametrize("fractions", [{"test_fraction": 0.0}, {"val_fraction": 0.5, "test_fraction": 0.5}])
def test_split_rejects_impossible_fractions(fractions):
    with pytest.raises(DataError) as excinfo:
        split(load("synthetic", image_size=8), **fractions)
    assert_one_line_error(excinfo, "cannot split")


# --- real data (../shared/data) -------------------------------------------------------------

def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}")
    return path


@pytest.mark.integration
def test_real_ham10000_subset_and_lesion_grouped_split():
    root = shared("ham10000")
    data = load("ham10000", data_dir=root, image_size=32, subset=100)
    assert 80 <= len(data) <= 140 and set(data.labels.tolist()) == set(range(7))
    assert "of 10015 images (class-stratified lesion subset, seed 0), 32x32" in data.description
    assert data.images.float().std() > 10  # real pictures, not a blank decode

    # The split itself on all 10,015 rows, without decoding: it only reads labels, ids and groups.
    metadata = pd.read_csv(root / "HAM10000_metadata.csv")
    labels = torch.tensor([HAM10000_CLASSES.index(dx) for dx in metadata["dx"]])
    everything = ImageSet("ham10000", HAM10000_CLASSES, torch.zeros(len(labels), 3, 1, 1, dtype=torch.uint8),
                          labels, tuple(metadata["image_id"]), tuple(metadata["lesion_id"]), "metadata only")
    parts = split(everything)
    assert_grouped_partition(everything, parts)
    test_share = torch.bincount(labels[parts.test], minlength=7) / len(parts.test)
    assert (test_share - torch.bincount(labels, minlength=7) / len(labels)).abs().max() < 0.02


@pytest.mark.integration
def test_real_isic2018_test_set():
    data = load_isic2018_test(shared("isic2018_task3_test"), image_size=32)
    assert len(data) == 1510 and "1510 of 1512 images; 2 missing (ISIC_0034524, ISIC_0035068)" in data.description
    assert torch.bincount(data.labels, minlength=7).argmax() == HAM10000_CLASSES.index("nv")
