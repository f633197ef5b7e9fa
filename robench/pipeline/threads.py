"""How many threads torch computes with while a run lasts: ``--threads N``, or chosen from the cores.

Torch starts one thread per core and each matrix product waits for its slowest thread. When other
work holds a core, that thread stalls and the others wait with it: on 2 cores that other jobs kept
busy, the README's first command took 23 s with ``--threads 1`` and 652 s with ``--threads 2``
(run one after the other on 2026-11-29). So without ``--threads`` robench takes one thread on a
machine of at most 2 cores, and elsewhere torch's own count less the cores the load average says
other work holds. An
``OMP_NUM_THREADS`` set by the user is their choice and is kept. The count is recorded in
config.json (``execution.threads``); it changes timings, never the numbers a run compares.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def choose(requested: int | None) -> int:
    """The thread count of a run: ``requested`` (--threads; robench.pipeline.limits bounds it), else the user's
    OMP_NUM_THREADS (at most one per core), else one on at most 2 cores, else torch's count less the
    cores busy with other work."""
    if requested is not None:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return min(torch.get_num_threads(), os.cpu_count() or 1)
    cores = available_cores()
    if cores <= 2:
        return 1
    busy = math.ceil(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(torch.get_num_threads(), cores - busy))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, as a container's cpuset sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def using(count: int) -> Iterator[None]:
    """Compute with ``count`` torch threads inside the block, and as before after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
