"""The command line: the offline run end to end, and one clear line for every bad input."""

from __future__ import annotations

import json

import pytest

from robench.cli import main
from robench.core.results import read_rows

FAST = ["--dataset", "synthetic", "--epochs", "2", "--quiet"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_builtin_with_package_and_options(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name in ("full", "linear_probe", "fgsm", "pgd"):
        assert f"  {name} " in out
    assert "from robench 0.2.0; options: steps=10, alpha=None, random_start=True" in out


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_synthetic_run_writes_rows_config_and_leaderboard(capsys, tmp_path):
    out_dir, boards = tmp_path / "run", tmp_path / "boards"
    code, out, err = run_cli(
        capsys, "run", *FAST, "--strategies", "full,linear_probe", "--attacks", "fgsm,pgd:steps=2",
        "--eps", "0.01,2/255", "--seeds", "0", "--out", str(out_dir), "--leaderboard-dir", str(boards), "--name", "t",
    )
    assert code == 0, err
    rows = read_rows(out_dir)
    # per (strategy, seed): a clean row + 2 attacks x 2 eps + the escalation at each eps
    assert len(rows) == 2 * (1 + 2 * 2 + 2)
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["attack"] for r in rows} == {"none", "fgsm", "pgd(steps=2)", "escalation"}
    for row in rows:
        assert 0 <= row["robust_acc"] <= row["clean_acc"] + 1e-9
        assert row["majority_acc"] > 0.4  # synthetic data is imbalanced like HAM10000
    config = json.loads((out_dir / "config.json").read_text())
    assert config["command"].startswith("robench run --dataset synthetic")
    assert len(config["split"]["fingerprint"]) == 12
    board = (boards / "t.md").read_text()
    assert "fgsm@0.01" in board and "pgd(steps=2)@2/255" in board  # eps 2/255 shown as such
    assert "robench_vit_micro" in board and config["split"]["fingerprint"] in board
    assert f"leaderboard: {boards / 't.md'}" in out


def test_leaderboard_command_rewrites_from_results(capsys, tmp_path):
    out_dir = tmp_path / "run"
    assert run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                   "--out", str(out_dir), "--leaderboard-dir", str(tmp_path), "--name", "a")[0] == 0
    code, out, _ = run_cli(capsys, "leaderboard", str(out_dir), "--leaderboard-dir", str(tmp_path / "again"))
    assert code == 0 and (tmp_path / "again" / "a.md").read_text() == (tmp_path / "a.md").read_text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--strategies", "ful"], "unknown strategy 'ful': did you mean full"),
        (["--attacks", "fgsn"], "unknown attack 'fgsn'"),
        (["--attacks", "pgd:stepz=5"], "unknown option 'stepz'"),
        (["--attacks", "pgd:steps=abc"], "expected a whole number"),
        (["--strategies", "full:lr=abc"], "expected a number"),
        (["--strategies", "full:optimizer=adam"], "optimizer must be adamw or sgd"),
        (["--eps", "1.5"], "outside [0, 1]"),
        (["--eps", "-0.1"], "outside [0, 1]"),
        (["--eps", "abc"], "is not a number"),
        (["--seeds", "0,x"], "seeds must be whole numbers"),
        (["--backbone", "vit_tiny_patch16_22"], "unknown backbone 'vit_tiny_patch16_22': did you mean"),
        (["--backbone", "resnet18", "--strategies", "vpt_deep"], "vpt_deep needs a timm VisionTransformer"),
        (["--backbone", "open_clp:ViT-B-16"], "unknown backbone 'open_clp': did you mean open_clip?"),
        (["--weights", "/nonexistent/w.safetensors"], "weights file /nonexistent/w.safetensors not found"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--test-set", "isic2018"], "--test-set 'isic2018' is not a test set of dataset 'synthetic': use one of split"),
        (["--dataset", "ham10000", "--data-dir", ".", "--test-set", "isic2018"], "--test-set isic2018 needs --test-dir"),
        (["--epochs", "0"], "--epochs must be a positive whole number"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "run", *FAST, "--out", str(tmp_path / "r"), "--leaderboard-dir", str(tmp_path), *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("robench: error: ")
    assert message in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


def test_unknown_dataset_and_missing_data_dir(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--dataset", "cifar", "--out", str(tmp_path / "r"))
    assert code == 2 and "cifar" in err and "synthetic" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "run", "--data-dir", str(tmp_path / "nope"), "--backbone", "robench_vit_micro",
                           "--image-size", "32", "--out", str(tmp_path / "r"))
    assert code == 2 and "--dataset synthetic" in err and err.count("\n") == 1


def test_unwritable_out_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "run", *FAST, "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write to --out" in err


def test_leaderboard_of_a_missing_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "leaderboard", str(tmp_path / "none"))
    assert code == 2 and "run directory" in err


def test_an_unknown_attack_names_the_close_match_and_the_valid_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", *FAST, "--attacks", "fgsn", "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "unknown attack 'fgsn': did you mean fgsm? valid attacks: autoattack, fgsm, minimal, pgd, square" in err


def _micro_weights(path, **replace):
    """A robench_vit_micro weights file, with some tensors replaced."""
    import torch
    from safetensors.torch import save_file

    from robench.pipeline.models import BackboneSpec, create_backbone
    from robench_plugins.backbones.timm import MICRO

    vit, _, _ = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    state = {name: tensor.clone() for name, tensor in vit.state_dict().items()}
    save_file(state | {name.replace("__", "."): torch.zeros(shape) for name, shape in replace.items()}, str(path))
    return path


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_weights_of_the_backbone_load_and_weights_that_do_not_fit_name_the_key(capsys, tmp_path):
    fitting = _micro_weights(tmp_path / "micro.safetensors")
    code, _, err = run_cli(capsys, "run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01",
                           "--weights", str(fitting), "--out", str(tmp_path / "ok"), "--leaderboard-dir", str(tmp_path))
    assert code == 0, err

    wrong = _micro_weights(tmp_path / "wrong.safetensors", blocks__0__attn__qkv__weight=(10, 64))
    code, _, err = run_cli(capsys, "run", *FAST, "--weights", str(wrong), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "weights wrong.safetensors do not fit backbone robench_vit_micro" in err
    assert "size mismatch for blocks.0.attn.qkv.weight" in err and "[10, 64]" in err


def test_a_weights_file_that_is_not_safetensors_is_one_line(capsys, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a weights file" * 4)
    code, _, err = run_cli(capsys, "run", *FAST, "--weights", str(junk), "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1
    assert "weights junk.safetensors are not a weights file: it is a text file beginning 'not a weights file" in err


def _no_dx_column(root):
    import pandas as pd

    pd.read_csv(root / "HAM10000_metadata.csv").drop(columns="dx").to_csv(root / "HAM10000_metadata.csv", index=False)


def _image_without_file(root):
    (root / "images" / "ISIC_0001004.jpg").unlink()


def _corrupt_jpeg(root):
    path = root / "images" / "ISIC_0001005.jpg"
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(("damage", "message"), [
    (_no_dx_column, "HAM10000_metadata.csv lacks the column(s) dx"),
    (_image_without_file, "have no .jpg file"),
    (_corrupt_jpeg, "cannot decode image"),
])
def test_a_broken_dataset_is_one_line_through_the_cli(capsys, tmp_path, monkeypatch, damage, message):
    from tests.test_data import write_release

    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path / "cache"))
    write_release(tmp_path / "ham")
    damage(tmp_path / "ham")
    code, _, err = run_cli(capsys, "run", "--data-dir", str(tmp_path / "ham"), "--backbone", "robench_vit_micro",
                           "--image-size", "32", "--quiet", "--out", str(tmp_path / "r"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("robench: error: ") and message in err
    if damage is _corrupt_jpeg:
        assert "ISIC_0001005.jpg" in err
    if damage is _image_without_file:
        assert "ISIC_0001004" in err
