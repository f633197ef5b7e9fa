"""Benchmark 3: an FGSM sweep over k = 5 eps values vs 5 separate FGSM calls.

The sweep computes the gradient once: its cost should be about one forward+backward plus five
forwards (the evaluations of the five adversarial batches), at most 1.1x that; and so about
2x faster than five separate calls, each with its own backward.

    python bench/fgsm_sweep.py
"""

from __future__ import annotations

import torch
from _timing import attack_setup, interleaved, report

from robench.attack import gradient
from robench.pipeline.evaluate import attack_sweep
from robench_plugins.attacks.fgsm import FGSM

N, SIZE, BATCH = 64, 112, 32
EPS = [0.002, 0.005, 0.01, 0.02, 0.04]

MODEL, IMAGES, LABELS = attack_setup(N, SIZE, BATCH)


def sweep():
    attack_sweep(MODEL, FGSM(), EPS, IMAGES, LABELS, LABELS, BATCH, "cpu")


def separate():
    for eps in EPS:
        attack_sweep(MODEL, FGSM(), [eps], IMAGES, LABELS, LABELS, BATCH, "cpu")


def floor():
    """The irreducible work: one forward+backward and k forwards per batch."""
    for start in range(0, N, BATCH):
        x, y = IMAGES[start : start + BATCH].float() / 255, LABELS[start : start + BATCH]
        gradient(MODEL, x, y).sign()  # FGSM's step direction, as FGSM.sweep computes it once
        with torch.no_grad():
            for eps in EPS:
                MODEL(x).argmax(1)


def image_passes(fn) -> int:
    """Images ``fn`` passes forward through the model (each gradient's forward carries a backward)."""
    count = [0]
    handle = MODEL.register_forward_hook(lambda module, args, output: count.__setitem__(0, count[0] + len(args[0])))
    try:
        fn()
    finally:
        handle.remove()
    return count[0]


if __name__ == "__main__":
    sweep_s, separate_s = interleaved(sweep, separate, repeats=5)
    sweep_again_s, floor_s = interleaved(sweep, floor, repeats=5)  # each ratio from its own alternation
    passes = {fn.__name__: image_passes(fn) for fn in (sweep, floor, separate)}
    report("fgsm sweep cost / (1 fwd+bwd + 5 fwd)", sweep_again_s / floor_s, "<= 1.1", sweep_again_s / floor_s <= 1.1,
           f"sweep {sweep_again_s:.2f} s, floor {floor_s:.2f} s; image forward passes: "
           + ", ".join(f"{name} {n}" for name, n in passes.items()))
    report("fgsm speed-up of the sweep over 5 separate calls", separate_s / sweep_s, "about 2", separate_s / sweep_s >= 1.5,
           f"sweep {sweep_s:.2f} s, separate {separate_s:.2f} s (ViT-Ti/16 at {SIZE}, {N} images)")
