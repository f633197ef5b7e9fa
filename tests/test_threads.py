"""How many torch threads a run computes with: --threads, the user's OMP_NUM_THREADS, or the free cores."""

from __future__ import annotations

import torch

from robench.pipeline import threads


def test_one_thread_on_two_cores_else_the_cores_other_work_leaves(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert threads.choose(None) == 1
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 12)  # torch's own count: its physical cores
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (5.2, 1.0, 1.0))
    assert threads.choose(None) == 10  # 16 cores, 6 of them busy
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 1.0, 1.0))
    assert threads.choose(None) == 12  # never more than torch would take
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (40.0, 1.0, 1.0))
    assert threads.choose(None) == 1


def test_asked_for_threads_win(monkeypatch):
    assert threads.choose(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)  # what torch read from OMP_NUM_THREADS
    assert threads.choose(None) == 4
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert threads.choose(None) == 8  # at most one per core, which robench.pipeline.limits also holds --threads to


def test_using_sets_and_restores_the_count():
    before = torch.get_num_threads()
    with threads.using(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
