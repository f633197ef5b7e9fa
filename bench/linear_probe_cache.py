"""Benchmark 4: linear probe on cached features vs training the head through the frozen backbone.

ViT-Ti/16 at 112x112 (random init), 10 epochs, 512 training and 64 validation images.
Through the frozen backbone each epoch costs a forward pass of every image; with the cache,
one pass in all. Prints the speed-up; target >= 20x.

    python bench/linear_probe_cache.py
"""

from __future__ import annotations

import torch

from _timing import interleaved, report
from robench.backbone import BackboneSpec, Normalized, create_backbone
from robench.train import train
from robench_plugins.strategies.linear_probe import LinearProbe

N_TRAIN, N_VAL, SIZE, EPOCHS = 512, 64, 112, 10
RECIPE = LinearProbe.recipe.override(epochs=EPOCHS)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8), torch.randint(0, 7, (n,), generator=g)


TRAIN, VAL = data(N_TRAIN, 0), data(N_VAL, 1)


def run(cached: bool):
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec("vit_tiny_patch16_224", SIZE, pretrained=False), 7)
    model = Normalized(LinearProbe().adapt(vit), mean, std)
    train(model, LinearProbe(), RECIPE, TRAIN, VAL, 7, seed=0, device=torch.device("cpu"), use_cached_features=cached)


if __name__ == "__main__":
    cached_s, through_s = interleaved(lambda: run(True), lambda: run(False), repeats=3)
    speedup = through_s / cached_s
    report("linear probe speed-up, cached features vs through the backbone", speedup, ">= 20", speedup >= 20,
           f"cached {cached_s:.2f} s, through {through_s:.2f} s ({EPOCHS} epochs, {N_TRAIN} images, ViT-Ti/16 at {SIZE})")
