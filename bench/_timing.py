"""Timing helpers for the benchmark scripts: A and B interleaved, medians and their ratio.

The machine is noisy, so each script times its two sides alternately (A B A B ...) after a
warm-up and reports medians and the ratio of medians, which holds up when the speed drifts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run alternately after one warm-up each."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(a))
        times_b.append(timed(b))
    return statistics.median(times_a), statistics.median(times_b)


def report(name: str, figure: float, target: str, passed: bool, detail: str = "") -> None:
    print(f"{name}: {figure:.3f} (target {target}) {'PASS' if passed else 'FAIL'}{'  ' + detail if detail else ''}")


def setup_threads() -> None:
    torch.set_num_threads(torch.get_num_threads())


def attack_setup(n: int, size: int, batch: int):
    """A frozen, eval-mode ViT-Ti/16 (random init: weights do not change the cost), n random uint8
    images, and the model's own predictions as labels, so that every image is attacked."""
    from robench.pipeline.evaluate import predict
    from robench.pipeline.models import BackboneSpec, Normalized, create_backbone

    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec("vit_tiny_patch16_224", size, pretrained=False), 7)
    model = Normalized(vit, mean, std).eval().requires_grad_(False)
    images = (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    return model, images, predict(model, images, batch, "cpu")
