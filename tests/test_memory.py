"""Peak memory is measured per model, not over the whole process's life."""

from __future__ import annotations

import time

import torch

from robench.pipeline.memory import PeakMemory

MIB = 2**20


def _hold(mib: int) -> None:
    block = torch.ones(mib * MIB // 4)  # touched, so it is resident
    time.sleep(0.2)
    del block


def test_cpu_peak_sees_memory_held_during_the_window_and_forgets_earlier_windows():
    with PeakMemory(torch.device("cpu")) as first:
        _hold(300)
    with PeakMemory(torch.device("cpu")) as second:
        time.sleep(0.1)
    assert first.mb > second.mb + 250  # ru_maxrss would report the first window's peak again
    assert second.mb > 0
