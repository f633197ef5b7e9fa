"""A third-party plugin package, pip-installed, shows in `robench list` and runs in `robench run`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

EXAMPLE = REPO / "docs" / "examples" / "robench-bitfit"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    """pip-install the example into a throwaway folder and return an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True,
    )
    return os.environ | {"PYTHONPATH": str(target), "ROBENCH_QUIET": "1"}


def robench(env, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robench.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_installed_plugin_is_listed_with_its_package(installed, tmp_path):
    listing = robench(installed, "list", "--kind", "strategy", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "bitfit" in listing.stdout and "from robench-bitfit; options: train_norms=False" in listing.stdout


def test_installed_plugin_runs_and_gets_a_leaderboard_row(installed, tmp_path):
    result = robench(installed, "run", "--dataset", "synthetic", "--strategies", "bitfit:train_norms=true",
                     "--attacks", "fgsm", "--eps", "0.01", "--epochs", "1", "--out", "run", "--name", "b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    board = (tmp_path / "leaderboards" / "b.md").read_text()
    assert "| bitfit(train_norms=true) |" in board.replace("  ", " ")


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    env = os.environ | {"ROBENCH_QUIET": "1"}
    result = robench(env, "run", "--dataset", "synthetic", "--strategies", "bitfit", "--out", "run", cwd=tmp_path)
    assert result.returncode == 2 and "unknown strategy 'bitfit'" in result.stderr
