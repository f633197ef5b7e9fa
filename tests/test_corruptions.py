"""MedMNIST-C corruptions beside the attacks: deterministic per image and seed, rows of their own
with intervals and paired tests, refused in one line where the input is wrong."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import robench
from robench.core.results import read_frame
from robench.errors import RobenchError
from robench.pipeline import corruptions

LIGHT = dict(dataset="synthetic", strategies="linear_probe", eps=0.02, seeds=0, escalation="off", quiet=True)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(5, 3, 112, 112, generator=generator) * 255).to(torch.uint8), [f"img{i}" for i in range(5)]


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "motion_blur", "characters", "pixelate"])
def test_a_corrupted_image_depends_on_its_seed_and_id_only(images, name):
    x, ids = images
    once = corruptions.corrupt(x, ids, name, 3, seed=0)
    assert once.shape == x.shape and once.dtype == torch.uint8 and not torch.equal(once, x)
    order = [3, 0, 4]
    assert torch.equal(corruptions.corrupt(x[order], [ids[i] for i in order], name, 3, seed=0), once[order])
    np.random.seed(123)  # the global generators neither decide the images nor are moved by them
    state = np.random.get_state()[1].copy()
    assert torch.equal(corruptions.corrupt(x, ids, name, 3, seed=0), once)
    assert np.array_equal(np.random.get_state()[1], state)
    if name != "pixelate":  # a random corruption draws anew for another seed
        assert not torch.equal(corruptions.corrupt(x, ids, name, 3, seed=1), once)
    assert (corruptions.corrupt(x, ids, name, 5, seed=0).float() - x.float()).abs().mean() >= (
        corruptions.corrupt(x, ids, name, 1, seed=0).float() - x.float()).abs().mean()  # severity 5 moves more than 1


def test_a_runs_corruption_rows_answer_the_corrupted_images(tmp_path):
    results = robench.run(attacks="fgsm,transfer:source=pretrained", corruptions="gaussian_noise,defocus_blur",
                          severities="1,3", out=tmp_path / "run", **LIGHT | {"strategies": "linear_probe,full", "epochs": 1})
    frame = read_frame(results.run_dir)
    shifted = frame[frame["attack_family"] == "corruption"]
    assert sorted(zip(shifted["attack"], shifted["eps"])) == sorted(2 * [("defocus_blur", 1.0), ("defocus_blur", 3.0),
                                                                         ("gaussian_noise", 1.0), ("gaussian_noise", 3.0)])
    assert (frame["status"] == "ok").all() and set(frame["attack_family"].dropna()) >= {"transfer", "corruption"}
    labels = np.array(results.config["attacked"]["labels"])
    for row in shifted.itertuples():
        assert row.robust_acc == pytest.approx(float((np.array(row.adv_pred) == labels).mean()))
        assert row.ece is not None and row.nll is not None
    again = read_frame(robench.run(attacks="fgsm", corruptions="gaussian_noise", severities="3", out=tmp_path / "again",
                                   **LIGHT | {"epochs": 1}).run_dir)
    first = shifted[(shifted["attack"] == "gaussian_noise") & (shifted["eps"] == 3.0) & (shifted["strategy"] == "linear_probe")].iloc[0]
    second = again[again["attack"] == "gaussian_noise"].iloc[0]
    assert first["adv_pred"] == second["adv_pred"]  # the same images, corrupted the same way, in another run
    page = results.leaderboard.read_text()
    assert "## Corruptions" in page and "worst corruption@3" in page and "Paired comparisons under the worst" in page
    assert "clean ECE" in page  # calibration in the headline
    main = page.split("## Robust accuracy", 1)[1].split("\n\n", 2)[1]
    assert "gaussian_noise" not in main and "defocus_blur" not in main  # a severity is not an eps: not in the attack grid


def test_a_corruption_that_fails_on_small_images_says_what_to_do_and_the_other_cells_stay(tmp_path):
    results = robench.run(attacks="fgsm", corruptions="characters,gaussian_noise", severities="5", out=tmp_path / "run",
                          **LIGHT)  # 32 px: MedMNIST-C's characters places words meant for 224 px
    rows = results.rows.set_index("attack")
    assert rows.loc["characters", "status"] == "failed" and rows.loc["gaussian_noise", "status"] == "ok"
    error = rows.loc["characters", "error"]
    assert error.startswith("ValueError: MedMNIST-C's characters failed at severity 5 on 32x32 images (")
    assert "use a larger --image-size or drop characters" in error and "\n" not in error
    assert "| characters | 5.0" in results.leaderboard.read_text().split("## Failed cells", 1)[1].replace("  ", " ")


@pytest.mark.slow
def test_the_issue_command_writes_transfer_and_corruption_rows(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robench", "run", "--dataset", "synthetic", "--strategies", "full,linear_probe",
                           "--attacks", "fgsm,transfer:source=pretrained", "--eps", "0.02", "--corruptions",
                           "gaussian_noise,defocus_blur", "--severities", "1,3", "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    frame = read_frame(tmp_path / "run")
    assert (frame["status"] == "ok").all() and {"transfer", "corruption"} <= set(frame["attack_family"].dropna())
    assert "clean ECE" in (tmp_path / "run" / "leaderboard.md").read_text()


@pytest.mark.parametrize("options, message", [
    (dict(corruptions="gausian_noise"), "unknown corruption 'gausian_noise': did you mean gaussian_noise"),
    (dict(corruptions="all", severities="0,3"), "severity 0 is outside 1-5"),
    (dict(corruptions="gaussian_noise", severities="two"), "--severities 'two': give whole numbers"),
])
def test_bad_corruption_input_is_one_line_before_training(tmp_path, options, message):
    with pytest.raises(RobenchError, match=message) as refused:
        robench.run(attacks="fgsm", out=tmp_path / "run", **LIGHT | options)
    assert "\n" not in str(refused.value) and not (tmp_path / "run" / "checkpoints").exists()


def test_the_command_line_refuses_a_corruption_in_one_line_before_torch_loads(tmp_path):
    script = ("import sys\nfrom robench.cli import main\ncode = main(['run', '--dataset', 'synthetic', '--corruptions', "
              f"'gausian_noise', '--out', {str(tmp_path / 'run')!r}])\nprint('exit', code, 'torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stdout.strip() == "exit 2 torch imported: False"
    assert done.stderr.startswith("robench: error: unknown corruption 'gausian_noise': did you mean gaussian_noise")
    assert done.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


def test_missing_medmnistc_says_how_to_install_it_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "medmnistc.corruptions.registry", None)  # as if not installed
    with pytest.raises(RobenchError, match=r'pip install "robench\[corruptions\]"'):
        robench.run(attacks="fgsm", corruptions="gaussian_noise", out=tmp_path / "run", **LIGHT)
    assert not (tmp_path / "run" / "checkpoints").exists()
