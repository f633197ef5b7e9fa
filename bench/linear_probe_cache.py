"""Benchmark 4: linear probe on cached features vs training the head through the frozen backbone.

ViT-Ti/16 at 112x112 (random init), 10 epochs, 512 training and 64 validation images, 3 seeds
as a run trains them. Through the frozen backbone every epoch of every seed costs a forward pass
of every image: 30 passes. With the cache the first seed pays one pass and writes the features
to disk (robench.pipeline.features); the other seeds read them and train only the head. Prints the
speed-up for the 3-seed grid (target >= 20x), and the first and a later seed alone.

    python bench/linear_probe_cache.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch
from _timing import report, timed

from robench.pipeline import features
from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
from robench.pipeline.train import train
from robench_plugins.strategies.linear_probe import LinearProbe

N_TRAIN, N_VAL, SIZE, EPOCHS, SEEDS, REPEATS = 512, 64, 112, 10, 3, 2
RECIPE = LinearProbe.recipe.override(epochs=EPOCHS)
KEY = {"benchmark": "linear_probe_cache", "strategy": "linear_probe"}


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8), torch.randint(0, 7, (n,), generator=g)


TRAIN, VAL = data(N_TRAIN, 0), data(N_VAL, 1)
torch.manual_seed(0)
BACKBONE = create_backbone(BackboneSpec("vit_tiny_patch16_224", SIZE, pretrained=False), 7)  # one backbone, as pretrained weights are


def one_seed(seed: int, cached: bool, store=None) -> float:
    vit, mean, std = BACKBONE
    model = Normalized(LinearProbe().adapt(vit), mean, std)
    return timed(lambda: train(model, LinearProbe(), RECIPE, TRAIN, VAL, 7, seed=seed, device=torch.device("cpu"),
                               use_cached_features=cached, features=store))


def grid(cached: bool, folder: Path) -> list[float]:
    """Seconds of each seed of a 3-seed grid; the cached grid starts with no features on disk."""
    path = folder / "features.safetensors"
    path.unlink(missing_ok=True)
    store = features.stored(path, KEY) if cached else None
    return [one_seed(seed, cached, store) for seed in range(SEEDS)]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        grid(True, Path(folder)), grid(False, Path(folder))  # warm-up
        cached_runs, through_runs = [], []
        for _ in range(REPEATS):  # interleaved, medians: the machine is noisy
            cached_runs.append(grid(True, Path(folder)))
            through_runs.append(grid(False, Path(folder)))
    cached_s = statistics.median(sum(run) for run in cached_runs)
    through_s = statistics.median(sum(run) for run in through_runs)
    through_seed = statistics.median(t for run in through_runs for t in run)
    first = statistics.median(run[0] for run in cached_runs)
    later = statistics.median(t for run in cached_runs for t in run[1:])
    speedup = through_s / cached_s
    report(f"linear probe speed-up over {SEEDS} seeds, cached features vs through the backbone", speedup, ">= 20", speedup >= 20,
           f"cached {cached_s:.2f} s, through {through_s:.2f} s ({EPOCHS} epochs, {N_TRAIN} images, ViT-Ti/16 at {SIZE})")
    print(f"  first seed (computes and writes the features): {through_seed / first:.1f}x ({first:.2f} s vs {through_seed:.2f} s)")
    print(f"  a later seed (reads them from disk): {through_seed / later:.0f}x ({later:.3f} s vs {through_seed:.2f} s)")
