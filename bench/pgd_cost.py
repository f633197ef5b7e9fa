"""Benchmark (issue 13): PGD-10 with early exit costs at most 1.3x the oracle on an undefended
real-data model, and is never weaker than the last-iterate PGD.

The model: full fine-tuning of ViT-Ti/16 at 112 px on the HAM10000 subset of
``bench/attack_audit.py`` (trained on first use, then read from its checkpoint), attacked on its
clean-correct images among the 120 attacked test images. The oracle knows when each image is
first fooled (from a last-iterate PGD run with the same seed): it spends, per image, one
forward+backward pass for each step before that, and one forward pass to check the result
(never-fooled images: all ten steps and the check). The oracle's passes are run (batched as
well as they can be: each step on all the images that still need it) and timed alternately
with the attack, so a host whose speed drifts slows both alike. Each PGD is timed with the check robench's sweep makes after
it (robench.pipeline.answers: an example the model already answered during the attack, bit for bit, is
not computed again), interleaved, one thread.

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
from _timing import interleaved, report  # noqa: E402

from robench.attack import exact_arithmetic, frozen, gradient  # noqa: E402
from robench.pipeline import runner  # noqa: E402
from robench.pipeline.answers import Answers  # noqa: E402
from robench.pipeline.options import parse_specs  # noqa: E402
from robench.pipeline.train import to_pixels  # noqa: E402
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
    planned = runner.plan(config)
    strategy = planned.strategies[0]
    prepared = runner.prepare_data(planned.config, planned.dataset)
    model, _ = runner.train_model(planned, strategy, attack_audit.SEED, prepared)
    chosen = torch.as_tensor(prepared.attacked)
    x, y = to_pixels(prepared.images.images[prepared.split.test][chosen]), prepared.images.labels[prepared.split.test][chosen]
    with torch.no_grad(), exact_arithmetic():
        keep = model(x).argmax(1) == y
    return model, x[keep], y[keep]


def oracle(model, x, y, steps_needed):
    """The passes an oracle that knows when each image is first fooled must make: per image, one
    forward+backward pass per step before that, in batches of the images still needing one, then
    one forward pass of every image to check it."""
    def run():
        for step in range(STEPS):
            todo = steps_needed > step
            if not todo.any():
                break
            gradient(model, x[todo], y[todo], "margin")
        with torch.no_grad():
            model(x).argmax(1)
    return run


def attack(model, x, y, eps, early: bool):
    """PGD-10 (early exit or last iterate) and the check robench's sweep makes after it; the robust accuracy."""
    def run():
        torch.manual_seed(0)
        with Answers(model, autocast_on=False) as answers:  # the sweep's check, as robench makes it
            adv = PGD(steps=STEPS, early_exit=early).perturb(model, x, y, eps)
            return (answers.predict(adv) == y).float().mean().item()
    return run


def passes(model, run) -> tuple[int, int]:
    """The image rows ``run`` passes through the model with gradients (forward+backward) and without
    (checks): a count that does not depend on how busy the host is."""
    counted = [0, 0]

    def count(module, args, output):
        counted[0 if torch.is_grad_enabled() else 1] += len(args[0])
    handle = model.register_forward_hook(count)
    try:
        run()
    finally:
        handle.remove()
    return counted[0], counted[1]


def main() -> None:
    torch.set_num_threads(1)
    model, x, y = undefended_model()
    model.eval()
    worst = 0.0
    with exact_arithmetic(), frozen(model):
        with_grad, without = interleaved(lambda: gradient(model, x, y, "margin"), lambda: model(x).argmax(1), repeats=5)
        check_fraction = without / with_grad
        for eps in EPS:
            steps_needed = first_fooled(model, x, y, eps)
            new_seconds, oracle_seconds = interleaved(attack(model, x, y, eps, True), oracle(model, x, y, steps_needed), repeats=3)
            old_seconds, oracle_again = interleaved(attack(model, x, y, eps, False), oracle(model, x, y, steps_needed), repeats=3)
            new_acc, old_acc = attack(model, x, y, eps, True)(), attack(model, x, y, eps, False)()
            ratio = new_seconds / oracle_seconds
            worst = max(worst, ratio)
            (grad_rows, check_rows), (oracle_grad, oracle_checks) = passes(model, attack(model, x, y, eps, True)), passes(
                model, oracle(model, x, y, steps_needed))
            units = (grad_rows + check_fraction * check_rows) / (oracle_grad + check_fraction * oracle_checks)
            print(f"eps {255 * eps:g}/255: early exit {grad_rows} forward+backward and {check_rows} forward-only image "
                  f"passes, oracle {oracle_grad} and {oracle_checks}: {units:.2f}x in forward+backward units "
                  f"(a forward-only pass {check_fraction:.2f} of one, measured)")
            print(f"eps {255 * eps:g}/255, {len(y)} images, mean steps to first fooled {steps_needed.float().mean():.2f}: "
                  f"early exit {new_seconds:.2f} s vs oracle {oracle_seconds:.2f} s ({ratio:.2f}x); last iterate "
                  f"{old_seconds:.2f} s vs oracle {oracle_again:.2f} s ({old_seconds / oracle_again:.2f}x); "
                  f"robust accuracy {100 * new_acc:.1f}% vs {100 * old_acc:.1f}%")
            assert new_acc <= old_acc, "early exit must never be weaker"
    report("PGD-10 with early exit / oracle, worst eps", worst, f"<= {TARGET}", worst <= TARGET)


if __name__ == "__main__":
    main()
