"""Subnormal floats and VPT-shallow on a CPU: training time with and without flushing them.

Training VPT-shallow on the real HAM10000 images with the ImageNet ViT-Ti/16 weights produces
subnormal floats, and x86 CPUs compute on them many times slower; robench flushes them to zero
while a run lasts (robench.pipeline.runner.numerics). This trains the same model (3 epochs, 1,421
training images of the 2,000-image subset at 112x112, seed 1) through the CLI twice, once with
the flush disabled, and prints the ratio of the training times and both clean accuracies.
On random images the slowdown does not show: it needs the real data.

    python bench/subnormal_flush.py      (needs ../shared/data/ham10000 and ../shared/weights)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from robench.attack import CLEAN

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RUN = """
import sys, torch
if sys.argv[1] == "kept":
    keep = torch.set_flush_denormal
    torch.set_flush_denormal = lambda flag: keep(False)
from robench.cli import main
sys.exit(main(["run", "--dataset", "ham10000", "--data-dir", sys.argv[2], "--subset", "2000", "--image-size", "112",
               "--backbone", "vit_tiny_patch16_224", "--weights", sys.argv[3], "--strategies", "vpt_shallow:epochs=3",
               "--attacks", "fgsm", "--eps", "0.01", "--seeds", "1", "--attack-samples", "20",
               "--out", sys.argv[4], "--leaderboard-dir", sys.argv[4], "--quiet"]))
"""


def train(mode: str, folder: Path) -> tuple[float, float]:
    out = folder / mode
    data, weights = SHARED / "data" / "ham10000", SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
    subprocess.run([sys.executable, "-c", RUN, mode, str(data), str(weights), str(out)], check=True)
    row = next(r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines()) if r["attack"] == CLEAN)
    return row["train_seconds"], row["clean_acc"]


if __name__ == "__main__":
    if not (SHARED / "data" / "ham10000").is_dir():
        sys.exit(f"{SHARED / 'data' / 'ham10000'} not found: this benchmark needs the real HAM10000 images and ViT-Ti/16 weights")
    with tempfile.TemporaryDirectory() as folder:
        kept, kept_acc = train("kept", Path(folder))
        flushed, flushed_acc = train("flushed", Path(folder))
    print(f"VPT-shallow training, subnormals kept vs flushed: {kept / flushed:.1f}x slower kept "
          f"({kept:.0f} s vs {flushed:.0f} s for 3 epochs; clean acc {kept_acc:.2%} vs {flushed_acc:.2%})")
