"""Benchmark (issues 11 and 21): what the minimal attack's whole curve costs against fixed-eps PGD-10 cells.

On the models of a finished run (rebuilt from its checkpoints; by default the issue-21 run,
``runs/issue21b``: ViT-Ti/16 at 112 px on a 1,000-image HAM10000 subset, 3 epochs, 120 attacked
images), this times robench's ``minimal`` attack (eps* per image up to 16/255) against one PGD-10
cell at each of the run's eps and at 0.01, on the same clean-correct images, interleaved, one
thread, and prints the ratios of the median times per model. Models with fewer than 10
clean-correct attacked images are skipped (nothing to time). Issue 21 set the budget at 3 PGD-10
cells; ``bench/independent_check.py`` measures the strength the cost buys.

    robench run --dataset ham10000 --data-dir ../shared/data/ham10000 --subset 1000 --image-size 112 \
        --backbone vit_tiny_patch16_224 --weights ../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --strategies full,lora,linear_probe,linear_probe:lr=1e-12 --epochs 3 --attacks fgsm,pgd,minimal \
        --eps 0.25/255,0.5/255 --seeds 0 --attack-samples 120 --out runs/issue21b
    python bench/minimal_cost.py [RUN_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _run_models import RunModels  # noqa: E402
from _timing import interleaved, report  # noqa: E402

from robench.attack import exact_arithmetic, frozen  # noqa: E402
from robench.core.metrics import eps_label  # noqa: E402
from robench_plugins.attacks.minimal import Minimal  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402

TARGET = 3.0
RUN = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "runs" / "issue21b"


def main() -> None:
    torch.set_num_threads(1)
    found = RunModels(RUN)
    worst = {}
    for label, seed, model in found.models():
        with exact_arithmetic(), frozen(model):
            with torch.no_grad():
                keep = model(found.x).argmax(1) == found.y
            if keep.sum() < 10:
                print(f"{label} seed {seed}: {int(keep.sum())} clean-correct images, skipped")
                continue
            x, y = found.x[keep], found.y[keep]
            ratios = []
            for eps in [*found.config.eps, 0.01]:
                pgd_seconds, minimal_seconds = interleaved(lambda: PGD().perturb(model, x, y, eps),
                                                           lambda: Minimal().minimize(model, x, y), repeats=1)
                ratios.append(minimal_seconds / pgd_seconds)
                print(f"{label} seed {seed}: {len(x)} images, PGD-10 cell at eps {eps_label(eps)} {pgd_seconds:.2f} s, "
                      f"minimal {minimal_seconds:.2f} s, ratio {ratios[-1]:.1f}")
            worst[label] = max(ratios)
    figure = max(worst.values())
    report("minimal attack / one PGD-10 cell, worst model and eps", figure, f"<= {TARGET}", figure <= TARGET)


if __name__ == "__main__":
    main()
