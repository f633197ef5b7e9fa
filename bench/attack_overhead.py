"""Benchmark 2: robench's attack loop vs a bare torchattacks loop on the same batches.

PGD-10 at eps 0.01 on ViT-Ti/16 at 112x112 (random init), every image attacked (the model's
clean predictions are used as labels, so all images are clean-correct for both loops).
Prints throughput(robench) / throughput(bare); target >= 0.97.

    python bench/attack_overhead.py
"""

from __future__ import annotations

import torch
import torchattacks
from _timing import attack_setup, interleaved, report

from robench.pipeline.evaluate import attack_sweep
from robench.pipeline.train import to_pixels
from robench_plugins.attacks.pgd import PGD

N, SIZE, BATCH, EPS, STEPS = 64, 112, 32, 0.01, 10

MODEL, IMAGES, LABELS = attack_setup(N, SIZE, BATCH)


def robench_loop():
    torch.manual_seed(0)
    attack_sweep(MODEL, PGD(steps=STEPS), [EPS], IMAGES, LABELS, LABELS, BATCH, "cpu")


def bare_loop():
    torch.manual_seed(0)
    attack = torchattacks.PGD(MODEL, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)
    for start in range(0, N, BATCH):
        x, y = to_pixels(IMAGES[start : start + BATCH]), LABELS[start : start + BATCH]
        adv = attack(x, y)
        with torch.no_grad():
            MODEL(adv).argmax(1)


if __name__ == "__main__":
    robench_s, bare_s = interleaved(robench_loop, bare_loop, repeats=3)
    ratio = bare_s / robench_s
    report("attack throughput robench/bare", ratio, ">= 0.97", ratio >= 0.97,
           f"robench {N / robench_s:.1f} img/s, bare {N / bare_s:.1f} img/s (PGD-{STEPS}, ViT-Ti/16 at {SIZE})")
