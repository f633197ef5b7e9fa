"""Benchmark 6: the whole benchmark on the real data, on this machine, timed from the outside.

ViT-Ti/16 (ImageNet weights) at 112x112 on a class-stratified subset of about 1,000 HAM10000
images (whole lesions), all five built-in strategies with
their default recipes, FGSM and PGD-10 at eps 0.01 and 0.02, one seed. Target: <= 15 minutes
of wall time on 2 CPU cores.

    python bench/end_to_end.py [DATA_DIR] [WEIGHTS]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import report

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED / "data" / "ham10000"
WEIGHTS = Path(sys.argv[2]) if len(sys.argv) > 2 else SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"

COMMAND = [
    sys.executable, "-m", "robench.cli", "run", "--dataset", "ham10000", "--data-dir", str(DATA), "--subset", "1000", "--image-size", "112",
    "--backbone", "vit_tiny_patch16_224", "--weights", str(WEIGHTS),
    "--strategies", "full,linear_probe,vpt_shallow,vpt_deep,lora", "--attacks", "fgsm,pgd",
    "--eps", "0.01,0.02", "--seeds", "0", "--quiet",
]

if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="robench-e2e-") as out:
        command = COMMAND + ["--out", f"{out}/run", "--leaderboard-dir", out, "--name", "e2e"]
        print("$ " + " ".join(command), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True)
        minutes = (time.perf_counter() - started) / 60
        print((Path(out) / "e2e.md").read_text())
    report("end-to-end wall time, minutes", minutes, "<= 15", minutes <= 15)
