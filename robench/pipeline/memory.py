"""Peak memory of one model's training: the CUDA allocator's peak on a GPU, the RSS peak on a CPU.

The process's lifetime peak (``ru_maxrss``) cannot tell the second model of a run from the
first, so on a CPU a background thread samples the process's resident set size while the model
trains and keeps the largest value seen (peaks shorter than the sampling interval can be missed).
"""

from __future__ import annotations

import threading

import psutil
import torch


class PeakMemory:
    """``with PeakMemory(device) as peak: train(...)``; then ``peak.mb`` is the peak in MiB."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval = device, interval
        self.mb = float("nan")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._process = psutil.Process()
        self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="robench-peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
            return
        self._stop.set()
        self._thread.join()
        self.mb = max(self._peak, self._process.memory_info().rss) / 2**20
