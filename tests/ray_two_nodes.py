"""A robench grid on a real 2-node Ray cluster (ray.cluster_utils: a head and two worker raylets on
this machine), one worker node killed while both train: run by tests/test_ray_cluster.py inside a
network namespace that has only ``lo``, so the nodes talk over loopback alone.

    python tests/ray_two_nodes.py OUT ARGS...   # ARGS: robench run's flags; writes OUT/killed.json
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import psutil
import ray
from ray.cluster_utils import Cluster

from robench.cli import main


def kill_when_both_train(cluster: Cluster, node, settle: float = 3.0) -> threading.Thread:
    """Kill ``node`` as a lost machine dies, once every worker CPU is taken (both models are training)
    and ``settle`` s more: its raylet and every process under it, the worker training a model
    included (without its raylet, a busy worker would go on and hand its rows in)."""

    def wait_and_kill() -> None:
        while ray.cluster_resources().get("CPU", 0) < 2 or ray.available_resources().get("CPU", 0) > 0:
            time.sleep(0.2)  # (a resource all taken is absent from available_resources)
        time.sleep(settle)
        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        workers = raylet.children(recursive=True)
        cluster.remove_node(node, allow_graceful=False)
        for worker in workers:
            try:
                worker.kill()
            except psutil.NoSuchProcess:
                pass

    thread = threading.Thread(target=wait_and_kill, daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    out, args = Path(sys.argv[1]), sys.argv[2:]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the head trains nothing
    doomed, survivor = cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, logging_level=logging.ERROR)
    killer = kill_when_both_train(cluster, doomed)
    try:
        code = main(["run", *args, "--executor", "ray", "--out", str(out / "ray")])
    finally:
        killer.join(timeout=1)
        ray.shutdown()
        cluster.shutdown()
    (out / "killed.json").write_text(json.dumps({"code": code, "killed_in_time": not killer.is_alive(),
                                                 "doomed": doomed.node_id, "survivor": survivor.node_id}))
