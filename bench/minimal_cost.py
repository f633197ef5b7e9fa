"""Benchmark (issue 11): the minimal attack's whole curve costs at most 2x one fixed-eps PGD-10 cell.

On the real-data models of ``bench/attack_audit.py`` (every built-in strategy, ViT-Ti/16 at 112
px, its 120 attacked HAM10000 test images; trained on first use, then read from their
checkpoints), this times robench's ``minimal`` attack (eps* per image up to 16/255) against one
PGD-10 cell at eps 0.01 on the same clean-correct images, interleaved, one thread, and prints the
ratio of the median times per model. VPT-deep is skipped where it classifies fewer than 10
attacked images correctly (nothing to time).

    python bench/minimal_cost.py [DATA_DIR] [WEIGHTS] [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attack_audit  # noqa: E402
from _timing import interleaved, report  # noqa: E402

from robench import results, runner  # noqa: E402
from robench.attack import exact_arithmetic, frozen  # noqa: E402
from robench.train import to_pixels  # noqa: E402
from robench_plugins.attacks.minimal import Minimal  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402

TARGET = 2.0


def main() -> None:
    torch.set_num_threads(1)
    config = attack_audit.CONFIG
    runner.run(config)
    prepared = runner.prepare_data(config)
    strategies = runner.plan(config).strategies
    x = to_pixels(prepared.images.images[prepared.split.test][torch.as_tensor(prepared.attacked)])
    labels = torch.tensor(results.read_config(config.out)["attacked"]["labels"])
    ratios = []
    for strategy in strategies:
        model, _ = runner.train_model(config, strategy, attack_audit.SEED, prepared, torch.device("cpu"))
        with exact_arithmetic(), frozen(model):
            with torch.no_grad():
                keep = model(x).argmax(1) == labels
            if keep.sum() < 10:
                print(f"{strategy.label}: {int(keep.sum())} clean-correct images, skipped")
                continue
            xc, yc = x[keep], labels[keep]
            pgd_seconds, minimal_seconds = interleaved(lambda: PGD().perturb(model, xc, yc, 0.01),
                                                       lambda: Minimal().minimize(model, xc, yc), repeats=3)
            _, star = Minimal().minimize(model, xc, yc)
        ratio = minimal_seconds / pgd_seconds
        ratios.append(ratio)
        print(f"{strategy.label}: {len(xc)} images, PGD-10 cell {pgd_seconds:.2f} s, minimal {minimal_seconds:.2f} s, "
              f"ratio {ratio:.2f}; median eps* {255 * star.median():.3f}/255")
    worst = max(ratios)
    report("minimal attack / one PGD-10 cell, worst model", worst, f"<= {TARGET}", worst <= TARGET)


if __name__ == "__main__":
    main()
