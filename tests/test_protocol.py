"""The evaluation protocol end to end: attacks on a fixed stratified subset, the ISIC 2018 test set."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd

from robench.cli import main
from robench.core.results import read_rows
from robench.data.split import stratified_sample
from robench.pipeline.runner import prepare_data
from tests.test_data import COLOURS, write_jpeg, write_release

FAST = ["run", "--dataset", "synthetic", "--epochs", "1", "--quiet", "--strategies", "linear_probe"]


def test_stratified_sample_is_fixed_exact_and_keeps_every_class():
    labels = np.array([5] * 67 + [4] * 11 + [2] * 11 + [1] * 5 + [0] * 3 + [6] * 2 + [3] * 1)
    chosen = stratified_sample(labels, 30, seed=0)
    assert len(chosen) == 30 and len(set(chosen)) == 30 and list(chosen) == sorted(chosen)
    assert np.array_equal(chosen, stratified_sample(labels, 30, seed=0))
    assert not np.array_equal(chosen, stratified_sample(labels, 30, seed=1))
    counts = np.bincount(labels[chosen], minlength=7)
    assert (counts >= 1).all()  # even the class with one image
    assert counts[5] == 20  # nv keeps its share: 30 * 67% = 20.1
    assert np.array_equal(stratified_sample(labels, 500), np.arange(len(labels)))  # more than there is: all


def test_attack_samples_attacks_the_same_subset_and_keeps_clean_metrics_on_the_whole_test_set(capsys, tmp_path):
    out = tmp_path / "run"
    code = main([*FAST, "--attacks", "fgsm,pgd:steps=2", "--eps", "0,0.01", "--seeds", "0,1",
                 "--attack-samples", "30", "--out", str(out), "--leaderboard-dir", str(tmp_path), "--name", "s"])
    assert code == 0, capsys.readouterr().err
    rows = pd.DataFrame(read_rows(out))
    n_test = rows["n_test"].iloc[0]
    assert n_test > 30 and set(rows["n_attacked"]) == {30}
    attacked = rows[rows["attack"] != "none"]
    assert (attacked["robust_acc"] <= attacked["attack_clean_acc"] + 1e-9).all()
    # eps 0 reproduces the subset's clean accuracy, which is the same subset for both seeds' models
    at_zero = attacked[attacked["eps"] == 0]
    assert (at_zero["robust_acc"] == at_zero["attack_clean_acc"]).all()
    assert set(attacked["attack_family"]) == {"single-step", "iterative", "escalation"} and not attacked["attack_black_box"].any()
    config = json.loads((out / "config.json").read_text())
    assert config["attack_samples"] == {"n": 30, "of": int(n_test), "seed": 0,
                                        "how": "class-stratified subset of the test set, the same for every strategy and seed"}
    board = (tmp_path / "s.md").read_text()
    assert f"attacks**: on a class-stratified subset of 30 of {n_test} test images" in board
    assert "clean acc (attacked)" in board and "the 30 attacked test images" in board


def test_the_attacked_subset_depends_on_the_split_alone():
    config = SimpleNamespace(dataset="synthetic", data_dir=None, subset=None, split_seed=0, test_set="split",
                             test_dir=None, attack_samples=30, backbone=SimpleNamespace(image_size=32))
    prepared = prepare_data(config)
    test_labels = prepared.images.labels[prepared.split.test].numpy()
    assert np.array_equal(prepared.attacked, stratified_sample(test_labels, 30, seed=0))
    assert np.array_equal(prepared.attacked, prepare_data(config).attacked)
    assert (np.bincount(test_labels[prepared.attacked], minlength=7) >= 1).all()
    assert prepare_data(SimpleNamespace(**{**vars(config), "attack_samples": None})).attacked is None


def write_isic_test_dir(root, dxs=("nv", "nv", "mel", "bkl", "df", "vasc", "bcc", "akiec")):
    """A small copy of the ISIC 2018 Task 3 test layout: one-hot ground truth and images/."""
    columns = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
    ids = [f"ISIC_{34524 + i:07d}" for i in range(len(dxs))]
    truth = pd.DataFrame({"image": ids, **{c: [float(dx.upper() == c) for dx in dxs] for c in columns}})
    root.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    for image_id, dx in zip(ids, dxs):
        write_jpeg(root / "images" / f"{image_id}.jpg", COLOURS[dx])
    return root


def test_runs_on_the_isic2018_test_set(capsys, tmp_path):
    test_dir = write_isic_test_dir(tmp_path / "isic")
    release = tmp_path / "ham"
    write_release(release, [(f"HAM_{100 * c + i:07d}", dx, 1) for c, dx in enumerate(COLOURS) for i in range(8)])
    out = tmp_path / "run"
    code = main(["run", "--dataset", "ham10000", "--data-dir", str(release), "--backbone", "robench_vit_micro",
                 "--image-size", "32", "--epochs", "1", "--quiet", "--strategies", "linear_probe",
                 "--attacks", "fgsm", "--eps", "0.01", "--test-set", "isic2018", "--test-dir", str(test_dir),
                 "--attack-samples", "7", "--out", str(out), "--leaderboard-dir", str(tmp_path), "--name", "i"])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(out)
    assert {r["n_test"] for r in rows} == {8} and {r["n_attacked"] for r in rows} == {7}
    config = json.loads((out / "config.json").read_text())
    assert config["split"]["n_test"] == 8 and "ISIC 2018 Task 3 test" in config["split"]["test_set"]
    assert config["attack_samples"]["of"] == 8
    assert "ISIC 2018 Task 3 test" in (tmp_path / "i.md").read_text()


def test_attack_samples_must_be_positive(capsys, tmp_path):
    code = main([*FAST, "--attack-samples", "0", "--out", str(tmp_path / "x")])
    assert code == 2 and "--attack-samples must be a positive whole number" in capsys.readouterr().err
