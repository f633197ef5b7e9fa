"""The real HAM10000 images and ViT-Ti/16 weights from ../shared, end to end (skipped when absent).

A 300-image lesion subset at 112x112, one epoch of full fine-tuning and a linear probe, FGSM:
about a minute on 2 CPU cores. It checks the pipeline on real data, not leaderboard numbers.
"""

from __future__ import annotations

import json

import pytest

from robench.cli import main
from robench.core.results import read_rows
from tests.conftest import shared_or_skip

pytestmark = pytest.mark.integration


@pytest.mark.slow  # 10 s or more: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_real_ham10000_with_vit_tiny_weights(tmp_path, capsys):
    data_dir = shared_or_skip("data", "ham10000")
    weights = shared_or_skip("weights", "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors")
    code = main([
        "run", "--dataset", "ham10000", "--data-dir", str(data_dir), "--subset", "300", "--image-size", "112",
        "--backbone", "vit_tiny_patch16_224", "--weights", str(weights),
        "--strategies", "full:epochs=1,linear_probe", "--attacks", "fgsm", "--eps", "0.01,0.02", "--seeds", "0",
        "--out", str(tmp_path / "run"), "--leaderboard-dir", str(tmp_path), "--name", "real", "--quiet",
    ])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 2 * (1 + 2 + 2) and all(r["status"] == "ok" for r in rows)  # clean, fgsm and escalation at 2 eps
    probe = next(r for r in rows if r["strategy"] == "linear_probe" and r["attack"] == "none")
    # pretrained ImageNet features separate HAM10000 classes well above chance (1/7)
    assert probe["clean_bacc"] > 0.3
    assert probe["trainable_params"] == 192 * 7 + 7
    fgsm = {r["eps"]: r for r in rows if r["strategy"] == "linear_probe" and r["attack"] == "fgsm"}
    assert fgsm[0.02]["robust_acc"] <= fgsm[0.01]["robust_acc"] <= probe["clean_acc"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["backbone"]["weights_sha256"].startswith("a22e9b3685d1")
    assert "300" in config["dataset"]["description"] or "of 10015 images" in config["dataset"]["description"]
    assert "of 10015 images" in (tmp_path / "real.md").read_text()
