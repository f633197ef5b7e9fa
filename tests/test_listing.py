"""Issue 25: `robench list` answers from a cache of what the plugins said, before torch loads, and
lists anew when the plugins change; a cache folder others can write to is not read."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LIST = "import sys\nfrom robench.cli import main\nmain(['list'])\nprint('torch imported:', 'torch' in sys.modules)"


def listed(cache, **env) -> tuple[str, bool]:
    done = subprocess.run([sys.executable, "-c", LIST], capture_output=True, text=True, check=True,
                          env=os.environ | {"ROBENCH_CACHE_DIR": str(cache)} | env)
    text, _, last = done.stdout.rstrip("\n").rpartition("\n")
    return text, last == "torch imported: True"


@pytest.mark.slow  # three processes, the first importing every plugin: 10 s on 2 busy cores
def test_a_second_listing_comes_from_the_cache_without_torch_and_a_change_lists_anew(tmp_path):
    first, loaded = listed(tmp_path)
    assert loaded and "  pgd " in first and "Strategies" in first
    again, loaded = listed(tmp_path)
    assert again == first and not loaded  # the same lines, no plugin imported
    fewer, loaded = listed(tmp_path, ROBENCH_DISABLE_PLUGINS="pgd")
    assert loaded and "  pgd " not in fewer and "  fgsm " in fewer  # another fingerprint: listed anew
    os.chmod(tmp_path / "plugins", 0o777)
    shared, loaded = listed(tmp_path)
    assert shared == first and loaded  # a folder others can write to is not read


@pytest.mark.slow  # two processes, the first importing every plugin
def test_a_mistyped_name_is_refused_from_the_cached_listing_before_torch_loads(tmp_path):
    listed(tmp_path)  # fills the cache
    script = ("import sys\nfrom robench.cli import main\ncode = main(['run', '--dataset', 'synthetic', '--attacks', 'fgsm,pgdd'])\n"
              "print('exit', code, 'torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=os.environ | {"ROBENCH_CACHE_DIR": str(tmp_path)})
    assert done.stdout.strip() == "exit 2 torch imported: False"
    assert done.stderr.startswith("robench: error: unknown attack 'pgdd': did you mean pgd? valid attacks: ")
    assert done.stderr.count("\n") == 1
