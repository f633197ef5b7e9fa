"""Benchmark (issue 13): AutoAttack with early exit is at least 10x faster than torchattacks'
AutoAttack on an undefended real-data model, and never weaker.

The model and images of bench/pgd_cost.py (full fine-tuning of ViT-Ti/16 at 112 px on a HAM10000
subset; its clean-correct attacked test images). AutoAttack standard (APGD-CE and APGD-T 100
iterations, FAB-T, Square 5000 queries), one run each way per eps, one thread.

    python bench/autoattack_cost.py [DATA_DIR] [WEIGHTS] [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import report, timed  # noqa: E402
from pgd_cost import undefended_model  # noqa: E402

from robench.attack import exact_arithmetic, frozen  # noqa: E402
from robench_plugins.attacks.autoattack import AutoAttack  # noqa: E402

TARGET = 10.0
EPS = (1 / 255, 4 / 255)


def main() -> None:
    torch.set_num_threads(1)
    model, x, y = undefended_model()
    slowest = float("inf")
    with exact_arithmetic(), frozen(model):
        for eps in EPS:
            found = {}
            for early in (True, False):
                adv = {}
                seconds = timed(lambda: adv.setdefault("x", AutoAttack(early_exit=early).perturb(model, x, y, eps)))
                with torch.no_grad():
                    found[early] = (seconds, (model(adv["x"]).argmax(1) == y).float().mean().item())
            (new, new_acc), (old, old_acc) = found[True], found[False]
            slowest = min(slowest, old / new)
            print(f"eps {255 * eps:g}/255, {len(y)} images: early exit {new:.1f} s, torchattacks' AutoAttack {old:.1f} s "
                  f"({old / new:.1f}x faster); robust accuracy {100 * new_acc:.1f}% vs {100 * old_acc:.1f}%")
            assert new_acc <= old_acc, "early exit must never be weaker"
    report("AutoAttack speed-up from early exit, smallest over eps", slowest, f">= {TARGET}", slowest >= TARGET)


if __name__ == "__main__":
    main()
