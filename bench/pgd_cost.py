"""Benchmark (issue 13): PGD-10 with early exit costs at most 1.3x the oracle on an undefended
real-data model, and is never weaker than the last-iterate PGD.

The model: full fine-tuning of ViT-Ti/16 at 112 px on the HAM10000 subset of
``bench/attack_audit.py`` (trained on first use, then read from its checkpoint), attacked on its
clean-correct images among the 120 attacked test images. The oracle knows when each image is
first fooled (from a last-iterate PGD run with the same seed): it spends, per image, one
forward+backward pass for each step before that, and one forward pass to check the result
(never-fooled images: all ten steps and the check). Its time is those passes at the per-image
cost measured on the whole batch. Each PGD is timed with the check robench's sweep makes after
it, interleaved, one thread.

    python bench/pgd_cost.py [DATA_DIR] [WEIGHTS] [OUT]
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attack_audit  # noqa: E402
from _timing import interleaved, report, timed  # noqa: E402

from robench import runner  # noqa: E402
from robench.attack import exact_arithmetic, frozen, gradient  # noqa: E402
from robench.options import parse_specs  # noqa: E402
from robench.train import to_pixels  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402

TARGET = 1.3
STEPS = 10
EPS = (1 / 255, 2 / 255, 4 / 255)


def first_fooled(model, x, y, eps) -> torch.Tensor:
    """Per image, the first iterate of a seeded last-iterate PGD-10 that the model gets wrong (STEPS: none)."""
    alpha, first = 2.5 * eps / STEPS, torch.full((len(y),), STEPS)
    torch.manual_seed(0)
    adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0, 1)
    for step in range(STEPS + 1):
        with torch.no_grad():
            wrong = model(adv).argmax(1) != y
        first[wrong & (first == STEPS)] = torch.tensor(step).clamp(max=STEPS)
        if step < STEPS:
            adv = torch.clamp(x + (adv + alpha * gradient(model, adv, y, "margin").sign() - x).clamp(-eps, eps), 0, 1)
    return first


def undefended_model():
    """The fully fine-tuned ViT-Ti/16 of attack_audit's run (trained on first use) and its
    clean-correct attacked test images."""
    config = replace(attack_audit.CONFIG, strategies=parse_specs("full", "strategy"))
    strategy = runner.plan(config).strategies[0]
    prepared = runner.prepare_data(config)
    model, _ = runner.train_model(config, strategy, attack_audit.SEED, prepared, torch.device("cpu"))
    chosen = torch.as_tensor(prepared.attacked)
    x, y = to_pixels(prepared.images.images[prepared.split.test][chosen]), prepared.images.labels[prepared.split.test][chosen]
    with torch.no_grad(), exact_arithmetic():
        keep = model(x).argmax(1) == y
    return model, x[keep], y[keep]


def main() -> None:
    torch.set_num_threads(1)
    model, x, y = undefended_model()
    worst = 0.0
    with exact_arithmetic(), frozen(model):
        per_fb = min(timed(lambda: gradient(model, x, y, "margin")) for _ in range(3)) / len(y)
        per_check = min(timed(lambda: model(x).argmax(1)) for _ in range(3)) / len(y)
        for eps in EPS:
            steps_needed = first_fooled(model, x, y, eps)
            oracle = per_fb * steps_needed.sum().item() + per_check * len(y)

            def attack(early):
                def run():
                    torch.manual_seed(0)
                    adv = PGD(steps=STEPS, early_exit=early).perturb(model, x, y, eps)
                    with torch.no_grad():
                        return (model(adv).argmax(1) == y).float().mean().item()
                return run
            new_seconds, old_seconds = interleaved(attack(True), attack(False), repeats=3)
            new_acc, old_acc = attack(True)(), attack(False)()
            ratio = new_seconds / oracle
            worst = max(worst, ratio)
            print(f"eps {255 * eps:g}/255, {len(y)} images, mean steps to first fooled {steps_needed.float().mean():.2f}: "
                  f"oracle {oracle:.2f} s, early exit {new_seconds:.2f} s ({ratio:.2f}x), last iterate {old_seconds:.2f} s "
                  f"({old_seconds / oracle:.2f}x); robust accuracy {100 * new_acc:.1f}% vs {100 * old_acc:.1f}%")
            assert new_acc <= old_acc, "early exit must never be weaker"
    report("PGD-10 with early exit / oracle, worst eps", worst, f"<= {TARGET}", worst <= TARGET)


if __name__ == "__main__":
    main()
