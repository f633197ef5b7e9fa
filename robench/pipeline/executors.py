"""Where the models of a grid run: one after another in this process, or in parallel on Ray.

An executor maps one function over the grid's (strategy, seed) cells and hands back each
cell's rows as the cell finishes. The function is the same for both (robench.pipeline.runner.model_rows);
the driver writes the rows it gets to the results file under the run's lock, so resuming,
skipping finished cells and checkpoints work alike. Ray is imported only when it is asked for.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

from robench.errors import RobenchError
from robench.pipeline import compute

EXECUTORS = ("local", "ray")
Work = Callable[..., Iterable[dict]]  # work(*cell, **context) -> the cell's rows


@dataclass
class Finished:
    """A cell whose work ended: its rows, or the error that lost them (a Ray worker that died)."""

    cell: tuple
    rows: Iterable[dict]
    error: BaseException | None = None


def local(work: Work, cells: list[tuple], context: dict) -> Iterator[Finished]:
    """Run the cells one after another in this process. Rows stream out while ``work`` yields
    them, so a crash loses at most the row being computed."""
    made_here = _made_here(node_name(), context)
    for cell in cells:
        yield Finished(cell, (row | made_here for row in work(*cell, **context)))


@dataclass(frozen=True)
class Ray:
    """Run every cell as a Ray task, as many at once as the cluster's CPUs and GPUs allow.

    A Ray instance this process already started (a notebook, a test) is used and left running;
    otherwise ``ray.init(address)`` joins the cluster at ``address``, or with None starts a local
    instance, and shuts it down at the end. ``context`` (the data, the
    config) goes to the object store once and every task reads it from there. A task returns its
    rows when its model is done, so an interrupted task loses that model's rows (not its
    checkpoint). With several machines the run's ``--out`` must be on a filesystem all of them
    share: tasks save and load checkpoints there.
    """

    address: str | None = None
    gpus_per_task: float | None = 0.0  # None: one GPU per task where the cluster has GPUs (--device auto, see gpus_per_task)
    threads: int = 1  # each task's CPU request and torch thread count (--threads)

    def __call__(self, work: Work, cells: list[tuple], context: dict) -> Iterator[Finished]:
        ray = import_ray()
        started = not ray.is_initialized()
        # Ray's processes start in an empty folder of their own, kept until they stop (see _outside)
        neutral = tempfile.TemporaryDirectory(prefix="robench-ray-") if started else None
        if started:
            try:
                with _outside(neutral.name):
                    ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except ConnectionError as exc:
                neutral.cleanup()
                raise RobenchError(f"cannot join Ray at {self.address}: {str(exc).splitlines()[0]} (start it with `ray start --head`, "
                                   "or drop --ray-address to start a local instance)") from None
        pending = {}
        try:
            shared = ray.put(context)
            gpus = self.gpus_per_task if self.gpus_per_task is not None else float(ray.cluster_resources().get("GPU", 0) >= 1)
            # one retry: a worker or node lost mid-task gets a second chance before its cells are failed
            task = ray.remote(_run_cell).options(num_cpus=self.threads, num_gpus=gpus, max_retries=1)
            pending = {task.remote(work, cell, shared, self.threads): cell for cell in cells}
            while pending:
                [ready], _ = ray.wait(list(pending), num_returns=1)
                cell = pending.pop(ready)
                try:
                    rows, error = ray.get(ready), None
                except ray.exceptions.RayError as exc:  # the task raised (its exception is the cause) or its worker died
                    rows, error = [], getattr(exc, "cause", None) or exc
                yield Finished(cell, rows, error)
        finally:
            for ref in pending:  # interrupted: do not leave tasks training for nobody
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()
                neutral.cleanup()


def _run_cell(work: Work, cell: tuple, context: dict, threads: int = 1) -> list[dict]:
    """The body of a Ray task (Ray resolves ``context`` from the object store before the call):
    ``threads`` torch threads, the CPUs the task reserved; with ``--device auto`` the device is the one
    this node sees (a CUDA GPU Ray gave the task, else the CPU), not the driver's; every row names the
    node and the device that made it.

    Numpy arrays from the object store are read-only views of shared memory; the work only
    reads them, so torch's warning on turning one into a tensor is noise.
    """
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    node = node_name()
    weights = context["plan"].config.backbone.weights if "plan" in context else None
    if weights is not None and not os.path.isfile(weights):
        raise RobenchError(f"--weights {weights} is not on Ray node {node}: put the file at the same path on every node "
                           "(a shared filesystem), or run where it is")
    torch.set_num_threads(threads)
    if "plan" in context:
        context = context | {"plan": on_this_node(context["plan"])}
    made_here = _made_here(node, context)
    return [row | made_here if isinstance(row, dict) else row for row in work(*cell, **context)]


def _made_here(node: str, context: dict) -> dict:
    """The fields every row gets where it was computed: the node, and the device of the plan it ran with."""
    device = getattr(context.get("plan"), "device", None)
    return {"node": node} | ({"device": str(device)} if device is not None else {})


def on_this_node(plan):
    """``plan`` with the device this process sees where the run asked for ``--device auto`` and the
    driver decided another (a CPU head with GPU workers); the precisions are re-read for it (bf16
    only where the device computes it natively, else fp32: a CPU driver's settled fp32 stays fp32 on a
    GPU worker). A device the run named stays."""
    config = plan.config
    if getattr(config, "device", None) != "auto":
        return plan
    here = compute.resolve_device("auto")
    if here == plan.device:
        return plan
    attacks = [replace(a, precision=compute.resolve_precision(a.precision, here, "--attack-precision")) for a in plan.attacks]
    return plan._replace(device=here, attacks=attacks, config=replace(
        config, train_precision=compute.resolve_precision(config.train_precision, here, "--train-precision"),
        attack_precision=compute.resolve_attack_precisions(config.attack_precision, here)))


def node_name() -> str:
    """The machine that computes here: its host name, and on Ray the node's IP address and short id
    (two nodes of one host, in network namespaces, share the host name)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        return f"{platform.node()} (ray node {ray.util.get_node_ip_address()} {context.get_node_id()[:8]})"
    return platform.node()


@contextmanager
def _outside(neutral: str) -> Iterator[None]:
    """Start Ray from the empty folder ``neutral``: Ray puts the driver's working folder on its workers'
    import path, and a folder there named ``robench`` (the clone, run from its parent) would be imported
    instead of the installed package. The folder must outlive the workers, which start in it (torch
    fails to load in a deleted one). The run's paths are absolute (robench.pipeline.plan)."""
    here = os.getcwd()
    os.chdir(neutral)
    try:
        yield
    finally:
        os.chdir(here)


def choose(name: str, address: str | None, gpus_per_task: float | None, threads: int = 1):
    """The executor the flags ask for; Ray's flags without ``--executor ray`` are refused."""
    if name == "local":
        if address is not None or gpus_per_task is not None:
            raise RobenchError("--ray-address and --ray-gpus-per-task need --executor ray")
        return local
    if name == "ray":
        import_ray()
        return Ray(address, gpus_per_task, threads)
    raise RobenchError(f"unknown executor {name!r}: use {' or '.join(EXECUTORS)}")


def gpus_per_task(name: str, given: float | None, device: torch.device, asked: str = "cpu") -> float | None:
    """The share of a GPU each Ray task reserves: 1 by default on CUDA (one model per GPU), 0 on a CPU.
    With ``--device auto``, None unless given: Ray decides once it has started, one GPU per task where
    its cluster has GPUs, none where it has none (each worker's device is its own, on_this_node)."""
    if name != "ray":
        return given
    if given is not None and not 0 < given <= 1:
        raise RobenchError(f"--ray-gpus-per-task {given:g}: give the share of one GPU a model needs, in (0, 1], e.g. 0.25 for four models per GPU")
    if asked == "auto":
        return given
    if device.type != "cuda":
        if given:
            raise RobenchError(f"--ray-gpus-per-task {given:g} needs a CUDA device and this run is on {device.type}: drop it or use --device cuda")
        return 0.0
    return 1.0 if given is None else given


def import_ray():
    try:
        import ray
    except ImportError:
        raise RobenchError('--executor ray needs Ray, which is not installed: pip install "robench[ray]"') from None
    return ray
