"""Benchmark (issue 13): where a real-data grid's time goes.

Runs one small grid on the real data under cProfile, in a fresh cache folder so that decoding
is counted (ViT-Ti/16 at 112 px, 1,000-image HAM10000 subset, full fine-tuning and the linear
probe for 2 epochs, FGSM, PGD and AutoAttack at 2 eps on 120 images, 1 seed) and prints the share
of the wall time in: decoding images, training, clean evaluation, each attack (from the rows'
``attack_seconds``), writing rows and the page, and the rest.

    python bench/profile_grid.py [DATA_DIR] [WEIGHTS]
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robench.cli import main as robench  # noqa: E402
from robench.core.results import read_rows  # noqa: E402

SHARED = REPO.parent / "shared"
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED / "data" / "ham10000"
WEIGHTS = Path(sys.argv[2]) if len(sys.argv) > 2 else SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
# (share name, module file, function): cumulative time of these calls
PARTS = [("decode images", "images.py", "load_images"), ("train", "train.py", "train"),
         ("clean evaluation", "evaluate.py", "predict"), ("attacks", "evaluate.py", "attack_sweep"),
         ("write rows", "results.py", "append_row"), ("write page and plots", "leaderboard.py", "write")]


def cumulative(stats: pstats.Stats, file: str, function: str) -> float:
    return sum(entry[3] for (path, _, name), entry in stats.stats.items() if path.endswith(file) and name == function)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ROBENCH_CACHE_DIR"] = tmp  # decode from the JPEGs, as a first run does
        out = Path(tmp) / "run"
        argv = ["run", "--dataset", "ham10000", "--data-dir", str(DATA), "--subset", "1000", "--image-size", "112",
                "--backbone", "vit_tiny_patch16_224", "--weights", str(WEIGHTS), "--strategies", "full,linear_probe",
                "--epochs", "2", "--attacks", "fgsm,pgd,autoattack", "--eps", "1/255,2/255", "--attack-samples", "120",
                "--seeds", "0", "--quiet", "--out", str(out), "--leaderboard-dir", tmp]
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.runcall(robench, argv)
        wall = time.perf_counter() - started
        stats = pstats.Stats(profiler)
        rows = read_rows(out)
    shares = {name: cumulative(stats, file, function) for name, file, function in PARTS}
    per_attack = {}
    for row in rows:
        if row.get("attack_seconds") is not None:
            per_attack[row["attack"]] = per_attack.get(row["attack"], 0) + row["attack_seconds"] / 2  # two eps share one sweep
    print(f"wall time {wall:.1f} s\n\n| part | seconds | share |\n|---|---|---|")
    for name, seconds in shares.items():
        print(f"| {name} | {seconds:.1f} | {100 * seconds / wall:.1f}% |")
        if name == "attacks":
            for attack, attack_seconds in per_attack.items():
                print(f"| - {attack} | {attack_seconds:.1f} | {100 * attack_seconds / wall:.1f}% |")
    rest = wall - sum(shares.values())
    print(f"| rest (planning, building models, checks) | {rest:.1f} | {100 * rest / wall:.1f}% |")
    if os.environ.get("PROFILE_TOP"):  # what the rest is made of
        stats.sort_stats("cumulative").print_stats("robench", 25)


if __name__ == "__main__":
    main()
