"""A 2-node Ray cluster on loopback: the grid's rows equal the sequential run's, and a worker node
killed while it trains is survived (its model is retried on the other node)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from robench.core.results import read_rows
from tests.test_executors import BASE, REPO, by_cell, run_cli

# two models of about 15 s each on one core (0.5 s an epoch), so that a node killed 3 s into them is mid-training
GRID = [*BASE, "--epochs", "30", "--strategies", "full", "--seeds", "0,1"]


def in_loopback_namespace(command: list[str]) -> list[str]:
    """``command`` in a new network namespace whose only interface is ``lo`` (root, util-linux unshare)."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare --net` (root, util-linux) for a network namespace of the cluster's own")
    return ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


@pytest.mark.slow  # a 3-raylet cluster and two runs: about two and a half minutes on 2 cores
def test_a_two_node_cluster_gives_the_sequential_rows_and_survives_a_killed_node(capsys, tmp_path):
    pytest.importorskip("ray")
    assert run_cli(capsys, "run", *GRID, "--out", str(tmp_path / "local"))[0] == 0
    done = subprocess.run(in_loopback_namespace([sys.executable, str(REPO / "tests" / "ray_two_nodes.py"), str(tmp_path), *GRID]),
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    report = json.loads((tmp_path / "killed.json").read_text())
    assert report["code"] == 0 and report["killed_in_time"], done.stderr[-3000:]
    local, on_ray = read_rows(tmp_path / "local"), read_rows(tmp_path / "ray")
    assert {r["status"] for r in on_ray} == {"ok"} and by_cell(local) == by_cell(on_ray)
    # the killed node was training a model when it died: every row, that model's too, is the survivor's
    assert {r["node"].split()[-1].rstrip(")") for r in on_ray} == {report["survivor"][:8]}
    assert all("127.0.0.1" in r["node"] for r in on_ray)  # loopback only
