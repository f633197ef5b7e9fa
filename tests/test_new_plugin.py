"""`robench new KIND NAME` writes a plugin package that installs, lists, passes its own tests and
runs as written; a bad kind or name is one line and exit 2."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from robench.cli import main
from robench.core.results import read_rows

KINDS = {"strategy": "my_strategy", "attack": "my_attack", "defense": "my_defense"}


@pytest.mark.parametrize(("argv", "message"), [
    (["new", "model", "x"], "robench new makes a strategy, attack or defense, not 'model'"),
    (["new", "attack", "My-Attack"], "plugin name 'My-Attack': use lowercase letters, digits and _"),
    (["new", "attack", "class"], "plugin name 'class'"),
    (["new", "attack", "pgd"], "an attack named 'pgd' is installed already"),
    (["new", "strategy", "full"], "a strategy named 'full' is installed already"),
])
def test_a_bad_kind_or_name_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    assert main([*argv, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_is_not_overwritten(capsys, tmp_path):
    assert main(["new", "attack", "my_attack", "--dir", str(tmp_path)]) == 0
    assert main(["new", "attack", "my_attack", "--dir", str(tmp_path)]) == 2
    assert "robench-my-attack exists already" in capsys.readouterr().err


@pytest.mark.parametrize("kind", KINDS)
def test_each_template_passes_its_own_tests_as_written(kind, tmp_path, monkeypatch, capsys):
    name = KINDS[kind]
    assert main(["new", kind, name, "--dir", str(tmp_path)]) == 0
    assert f"pip install -e {tmp_path / ('robench-' + name.replace('_', '-'))}" in capsys.readouterr().out
    folder = tmp_path / f"robench-{name.replace('_', '-')}"
    monkeypatch.syspath_prepend(str(folder))
    spec = importlib.util.spec_from_file_location(f"new_{name}", folder / "tests" / f"test_{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, n) for n in dir(module) if n.startswith("test_")]
    assert tests
    for test in tests:
        test()


@pytest.mark.slow  # pip builds three packages in isolated environments, then a run of 4 models: minutes
def test_the_packages_install_list_and_run(tmp_path):
    for kind, name in KINDS.items():
        assert main(["new", kind, name, "--dir", str(tmp_path)]) == 0
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                          *[str(tmp_path / f"robench-{n.replace('_', '-')}") for n in KINDS.values()]],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = os.environ | {"PYTHONPATH": str(site), "ROBENCH_QUIET": "1"}

    def robench(*args):
        return subprocess.run([sys.executable, "-m", "robench", *args], env=env, cwd=tmp_path, capture_output=True, text=True)

    listing = robench("list")
    assert listing.returncode == 0, listing.stderr
    for name in KINDS.values():
        assert f"from robench-{name.replace('_', '-')} 0.1.0" in listing.stdout
    done = robench("run", "--dataset", "synthetic", "--epochs", "1", "--strategies", "linear_probe,my_strategy",
                   "--defenses", "none,my_defense", "--attacks", "fgsm,my_attack", "--eps", "0.02", "--seeds", "0",
                   "--out", "run", "--name", "new")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert {row["strategy"] for row in rows} == {"linear_probe", "my_strategy", "linear_probe + my_defense",
                                                  "my_strategy + my_defense"}
    assert all(row["status"] == "ok" for row in rows) and {"fgsm", "my_attack"} <= {row["attack"] for row in rows}
