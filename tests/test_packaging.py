"""What a user installs from a package index: `python -m build` makes an sdist and then a wheel from
that sdist (so a file the sdist forgets breaks the wheel too); the wheel, installed apart from
the source tree, lists the plugins and finishes a run."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # an isolated build environment and a whole (tiny) run: about 40 s
def test_the_sdist_builds_a_wheel_that_installs_lists_and_runs(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source)
    for part in ("robench", "plugins"):  # a clean copy: no egg-info of an earlier build can help
        shutil.copytree(REPO / part, source / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], check=True,
                   capture_output=True, text=True)
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    with tarfile.open(sdist) as archive:
        assert any(name.endswith("robench/cli/presets/study-2024.toml") for name in archive.getnames())
        assert any(name.endswith("robench/cli/templates/attack.py.tmpl") for name in archive.getnames())
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "robench").rglob("*.py")}
    modules |= {"robench_plugins/" + path.relative_to(REPO / "plugins").as_posix() for path in (REPO / "plugins").rglob("*.py")}
    assert modules <= names, f"missing from the wheel: {sorted(modules - names)[:5]}"
    assets = {"robench/report/site_assets/" + path.name for path in (REPO / "robench" / "report" / "site_assets").iterdir()}
    assets |= {"robench/cli/templates/" + path.name for path in (REPO / "robench" / "cli" / "templates").iterdir()}
    assert assets <= names and "[robench]" in entry_points and "autoattack = robench_plugins.attacks.autoattack" in entry_points

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    out = tmp_path / "run"
    script = (f"import sys; sys.path.insert(0, {str(site)!r}); import robench, robench_plugins; "
              f"assert robench.__file__.startswith({str(site)!r}) and robench_plugins.__file__.startswith({str(site)!r}); "
              "from robench.cli import main; "
              "assert main(['list']) == 0; "
              f"sys.exit(main(['run', '--dataset', 'synthetic', '--epochs', '1', '--quiet', '--strategies', 'linear_probe', "
              f"'--attacks', 'fgsm', '--eps', '0.02', '--seeds', '0', '--out', {str(out)!r}, '--leaderboard-dir', {str(out)!r}]))")
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "ROBENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "linear_probe" in done.stdout and "fgsm" in done.stdout
    assert (out / "results.jsonl").exists() and any(out.glob("*.md"))
