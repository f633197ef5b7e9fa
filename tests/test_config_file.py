"""Run settings from a TOML file or a shipped preset: file values fill in what was not typed,
typed flags win, argparse's defaults never pass for a choice, and every mistake is one line."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest

from robench.cli import _run_parser, config_file, main, parse_eps, parse_seeds
from robench.core.results import read_rows
from robench.pipeline.options import parse_specs
from tests.conftest import REPO

PRESETS = ("ham10000-cpu-smoke", "study-2024")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # 10 s or more on 2 cores (default pytest under 4 min)
def test_config_file_runs_with_typed_flags_winning(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(
        """
        dataset = "synthetic"
        strategies = ["linear_probe", "full:epochs=1"]
        attacks = ["fgsm", "pgd:steps=2"]
        eps = [0.01, "2/255"]
        seeds = [0]
        epochs = 2
        protocol = "correct"          # argparse's default "all" must not replace it
        attack_batch_size = 16
        leaderboard-dir = "boards"    # the flag's spelling works too
        out = "run"
        name = "from-file"
        quiet = true
        """
    )
    code, out, err = run_cli(capsys, "run", "--config", "run.toml", "--eps", "0.02", "--seeds", "3")
    assert code == 0, err
    rows = read_rows(tmp_path / "run")
    assert {r["eps"] for r in rows if r["attack"] != "none"} == {0.02}  # typed --eps wins
    assert {r["seed"] for r in rows} == {3}
    assert {r["strategy"] for r in rows} == {"linear_probe", "full(epochs=1)"}
    assert {r["attack"] for r in rows} == {"none", "fgsm", "pgd(steps=2)", "escalation"}
    assert {r["epochs"] for r in rows if r["strategy"] == "full(epochs=1)"} == {1}  # the spec's recipe beats epochs
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"] == "correct"
    page = tmp_path / "boards" / "from-file.md"
    assert page.is_file() and (tmp_path / "boards" / "from-file-fgsm.png").is_file()
    assert "## Accuracy on the clean-correct subset" in page.read_text()
    # the recorded command needs no file to be re-run, and says what the typed flags said
    command = shlex.split(config["command"])
    assert "--config" not in command and command[:2] == ["robench", "run"]
    flags = dict(zip(command[2::1], command[3::1]))
    assert flags["--dataset"] == "synthetic" and flags["--eps"] == "0.02" and flags["--seeds"] == "3"
    assert flags["--strategies"] == "linear_probe,full:epochs=1" and flags["--protocol"] == "correct"
    assert "--quiet" in command and "--split-seed" not in command  # untouched defaults stay out


@pytest.mark.slow  # 10 s: default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_preset_runs_with_flags_overriding_it(tmp_path, capsys):
    # the CPU smoke preset, pointed at the offline synthetic data and the micro ViT
    code, _, err = run_cli(capsys, "run", "--preset", "ham10000-cpu-smoke", "--dataset", "synthetic",
                           "--backbone", "robench_vit_micro", "--image-size", "32", "--subset", "300",
                           "--out", str(tmp_path / "r"), "--leaderboard-dir", str(tmp_path), "--name", "p", "--quiet")
    assert code == 0, err
    rows = read_rows(tmp_path / "r")
    assert {r["strategy"] for r in rows} == {"linear_probe", "full(epochs=2)"}
    assert {r["attack"] for r in rows} == {"none", "fgsm", "pgd(steps=5)", "escalation"}
    assert {r["eps"] for r in rows if r["attack"] != "none"} == {0.01, 0.02}


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_presets_parse_and_every_key_is_a_flag(name):
    table = config_file.read_preset(name)
    actions = {a.dest: a for a in _run_parser()._actions if a.dest not in ("help", "config", "preset")}
    values = config_file.flag_values(table, actions, f"preset {name}")
    assert parse_specs(values["strategies"], "strategy") and parse_specs(values["attacks"], "attack")
    assert parse_eps(values["eps"]) and parse_seeds(values["seeds"])
    assert config_file.summary(config_file.preset_text(name))


def test_study_preset_is_the_study_protocol_plus_robench_additions():
    values = config_file.read_preset("study-2024")
    assert values["backbone"] == "vit_base_patch16_224" and values["image_size"] == 224
    assert values["dataset"] == "ham10000" and "weights" not in values  # timm's hub download
    assert values["strategies"] == ["full", "vpt_deep:prompts=5", "vpt_deep:prompts=10", "vpt_deep:prompts=50",
                                    "vpt_shallow"]
    assert values["attacks"] == ["fgsm", "pgd", "autoattack"]
    assert values["eps"] == [0.01, 0.02] and values["seeds"] == [0, 1, 2]
    assert values["protocol"] == "correct" and values["device"] == "cuda"
    assert "GPU" in config_file.preset_text("study-2024").split("\n\n")[0]  # says it needs one, and how long


def test_cpu_preset_is_cpu_sized():
    values = config_file.read_preset("ham10000-cpu-smoke")
    assert values["backbone"] == "vit_tiny_patch16_224" and values["image_size"] == 112
    assert values["subset"] <= 1000 and values["device"] == "cpu"
    assert {spec.split(":")[0] for spec in values["strategies"]} == {"linear_probe", "full"}
    assert {spec.split(":")[0] for spec in values["attacks"]} == {"fgsm", "pgd"}


@pytest.mark.parametrize("argv", [["presets"], ["run", "--preset", "list"]])
def test_presets_are_listed_with_how_to_copy_one(capsys, argv):
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    for name in PRESETS:
        assert f"  {name} " in out
    assert "robench presets NAME > my-run.toml" in out and "robench run --config my-run.toml" in out


def test_presets_name_prints_the_file_to_copy(capsys, tmp_path, monkeypatch):
    code, out, _ = run_cli(capsys, "presets", "study-2024")
    assert code == 0 and out == config_file.preset_text("study-2024")
    copy = tmp_path / "mine.toml"
    copy.write_text(out)
    assert config_file.read_file(copy) == config_file.read_preset("study-2024")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs = ", "is not valid TOML"),
        ("epoch = 3", "unknown key 'epoch' (did you mean epochs?); valid keys: model, dataset, data_dir"),
        ("config = 'other.toml'", "unknown key 'config'"),
        ("[run]\nepochs = 3", "unknown key 'run'"),
        ('epochs = "3"', "key 'epochs' must be a whole number, got '3'"),
        ("epochs = true", "key 'epochs' must be a whole number, got True"),
        ("lr = 'fast'", "key 'lr' must be a number"),
        ("data_dir = 3", "key 'data_dir' must be a path (a string), got 3"),
        ("quiet = 'yes'", "key 'quiet' must be true or false"),
        ("strategies = 5", "key 'strategies' must be a list of items each a string, got 5"),
        ("eps = [0.01, true]", "key 'eps' must be a list of items each a number or a whole number or a string"),
        ("seeds = [0, 1.5]", "key 'seeds' must be a list of items each a whole number, got 1.5"),
        ("protocol = 'any'", "key 'protocol' must be one of all, correct, got 'any'"),
        ("eps = [1.5]", "outside [0, 1]"),  # values are checked like the flag's
        ("strategies = ['ful']", "unknown strategy 'ful': did you mean full"),
    ],
)
def test_bad_config_file_is_one_line_and_exit_code_2(capsys, tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text('dataset = "synthetic"\n' + text + "\n")
    code, _, err = run_cli(capsys, "run", "--config", str(path), "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("robench: error: ")
    assert message in err
    assert not (tmp_path / "r" / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--config", "/nonexistent/run.toml"], "config file /nonexistent/run.toml not found"),
        (["run", "--config", "."], "cannot read config file ."),
        (["run", "--preset", "nope"], "unknown preset 'nope': presets: ham10000-cpu-smoke, study-2024"),
        (["run", "--preset", "study-2025"], "unknown preset 'study-2025': did you mean study-2024?"),
        (["presets", "nope"], "unknown preset 'nope'"),
        (["run", "--preset", "study-2024", "--config", "x.toml"], "give --config FILE or --preset NAME, not both"),
    ],
)
def test_missing_files_and_unknown_presets(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_presets_ship_with_the_package(tmp_path):
    """setuptools' build_py, which fills a wheel, copies the presets: a pip install ships them.
    It runs on a clean copy of the sources, so no egg-info left by an earlier build can help."""
    source = tmp_path / "src"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source)
    for part in ("robench", "plugins"):
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
                    "--build-lib", str(tmp_path / "lib")], cwd=source, check=True, capture_output=True, text=True)
    shipped = sorted(path.name for path in (tmp_path / "lib" / "robench" / "cli" / "presets").glob("*.toml"))
    assert shipped == [f"{name}.toml" for name in PRESETS]
