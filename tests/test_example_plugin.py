"""A third-party plugin package, pip-installed, shows in `robench list` and runs in `robench run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from robench.core.results import read_rows
from tests.conftest import REPO

EXAMPLES = [REPO / "docs" / "examples" / name for name in ("robench-bitfit", "robench-random-sign", "robench-goodfellow-at")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """pip-install the examples into a throwaway folder and return an environment that sees them.

    Built as their READMEs tell a user to install them: in pip's isolated build environment, which
    fetches their build backend (setuptools) from pip's configured index, as `pip install -e .` of
    robench itself did. Not --no-build-isolation: that needs a setuptools in this environment that
    builds wheels by itself (>= 70.1, or the wheel package), and a fresh venv's (65.5 on Python
    3.11) fails with "invalid command 'bdist_wheel'".
    """
    target = tmp_path_factory.mktemp("site")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                          *map(str, EXAMPLES)], check=False, capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return os.environ | {"PYTHONPATH": str(target), "ROBENCH_QUIET": "1"}


def robench(env, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robench.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def listing(installed, tmp_path_factory) -> subprocess.CompletedProcess:
    """One `robench list` with the examples installed (each robench process takes seconds to import torch)."""
    return robench(installed, "list", cwd=tmp_path_factory.mktemp("list"))


@pytest.mark.slow  # its fixture installs the example package (16 s); CI runs it with -m slow
def test_installed_plugin_is_listed_with_its_package(listing):
    assert listing.returncode == 0, listing.stderr
    assert "bitfit" in listing.stdout and "from robench-bitfit 0.1.0; options: train_norms=False" in listing.stdout
    assert "from robench-goodfellow-at 0.1.0; options: eps=0.01, clean_weight=0.5" in listing.stdout


@pytest.mark.parametrize("example", [e for e in EXAMPLES if (e / "tests").is_dir()], ids=lambda p: p.name)
def test_each_examples_own_tests_pass_as_shipped(example, monkeypatch):
    """The tutorial tells plugin authors to copy these tests: they must run against this robench.
    In this process, from the source folders: a pytest of its own would start torch again."""
    import importlib.util

    monkeypatch.syspath_prepend(str(example))
    for path in sorted((example / "tests").glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name in [n for n in dir(module) if n.startswith("test_")]:
            getattr(module, name)()


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_installed_plugin_runs_and_gets_a_leaderboard_row(installed, tmp_path):
    result = robench(installed, "run", "--dataset", "synthetic", "--strategies", "bitfit:train_norms=true",
                     "--attacks", "fgsm", "--eps", "0.01", "--epochs", "1", "--out", "run", "--name", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    board = (tmp_path / "run" / "leaderboard.md").read_text()  # a run's page stays in its folder
    assert "| bitfit(train_norms=true) |" in board.replace("  ", " ")


def test_without_the_plugin_the_name_is_unknown(tmp_path, capsys):
    from robench.cli import (
        main,  # in this process, which does not see the examples' install folder
    )

    assert main(["run", "--dataset", "synthetic", "--strategies", "bitfit", "--out", str(tmp_path / "run")]) == 2
    assert "unknown strategy 'bitfit'" in capsys.readouterr().err


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_installed_attack_plugin_is_listed_and_is_weaker_than_fgsm(installed, listing, tmp_path):
    assert "random_sign" in listing.stdout and "from robench-random-sign 0.1.0; options: draws=1" in listing.stdout
    result = robench(installed, "run", "--dataset", "synthetic", "--strategies", "linear_probe",
                     "--attacks", "fgsm,random_sign:draws=3", "--eps", "0.03", "--out", "run", "--name", "r", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {row["attack"]: row for row in read_rows(tmp_path / "run")}
    # noise at the full budget is a floor: the gradient's direction must hurt at least as much
    assert rows["fgsm"]["robust_acc"] < rows["random_sign(draws=3)"]["robust_acc"] <= rows["none"]["clean_acc"]
    assert "| linear_probe |" in (tmp_path / "run" / "leaderboard.md").read_text().replace("  ", " ")
