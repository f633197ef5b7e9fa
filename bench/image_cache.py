"""Benchmark 5: decoded-image cache throughput vs the training step's throughput.

Loads the real HAM10000 images (../shared/data/ham10000, first N ids) at 224x224 once to fill
the cache, then times a cached load, and compares its images/s with one full fine-tuning step
of ViT-Ti/16 at 224 (batch 32). Target: loader >= 5x the training step.

    python bench/image_cache.py [DATA_DIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from _timing import report, timed

from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
from robench.pipeline.train import to_pixels

N, SIZE, BATCH = 2000, 224, 32
DATA = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000")

os.environ["ROBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="robench-bench-")
from robench.data.images import load_images  # noqa: E402  (after the cache dir is set)


def training_images_per_second() -> float:
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec("vit_tiny_patch16_224", SIZE, pretrained=False), 7)
    model = Normalized(vit, mean, std).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = (torch.rand(BATCH, 3, SIZE, SIZE) * 255).to(torch.uint8), torch.randint(0, 7, (BATCH,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(to_pixels(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    return BATCH * 3 / timed(lambda: [step() for _ in range(3)])


if __name__ == "__main__":
    ids = pd.read_csv(DATA / "HAM10000_metadata.csv")["image_id"][:N]
    paths = [DATA / "images" / f"{image_id}.jpg" for image_id in ids]
    decode_s = timed(lambda: load_images(paths, SIZE))
    cached_s = min(timed(lambda: load_images(paths, SIZE)) for _ in range(3))
    loader, trainer = N / cached_s, training_images_per_second()
    report("cached loader / training step, images per second", loader / trainer, ">= 5", loader / trainer >= 5,
           f"first decode {N / decode_s:.0f} img/s, cached {loader:.0f} img/s, training step {trainer:.1f} img/s ({N} images at {SIZE})")
