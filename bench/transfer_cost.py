"""Benchmark (issue 26): a transfer cell over N models costs about one PGD cell plus N forward passes.

A transfer attack's examples are crafted once per (attack, seed) on the surrogate and read from the
run folder by every other model (robench.pipeline.transfer), so its cost over a run of N models is
one PGD-10 on the surrogate, N reads of the examples and N forward passes of the targets. This
times exactly that path (``transfer.examples`` crafting, then reading; ``transfer_sweep`` for each
target) against its yardstick: one last-iterate PGD-10 cell (``attack_sweep``) on one model plus N
forward passes of the same images. Models: ViT-Ti/16 at 112 px, random init (weights do not change
the cost), 64 images, one thread, each side timed alternately (bench/_timing.py). Goal: a ratio of at
most 1.2.

    python bench/transfer_cost.py [N_MODELS]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import attack_setup, interleaved, report  # noqa: E402

from robench.pipeline import transfer  # noqa: E402
from robench.pipeline.evaluate import attack_sweep, logits_of, transfer_sweep  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402
from robench_plugins.attacks.transfer import Transfer  # noqa: E402

GOAL = 1.2
EPS, SIZE, IMAGES, BATCH = 1 / 255, 112, 64, 32


def main(n_models: int = 4) -> None:
    torch.set_num_threads(1)
    surrogate, images, labels = attack_setup(IMAGES, SIZE, BATCH)
    targets = [surrogate] * n_models  # same architecture: a forward pass costs the same on any weights
    with torch.no_grad():
        probs = torch.softmax(logits_of(surrogate, images, BATCH, "cpu"), 1)
    folder = Path(tempfile.mkdtemp(prefix="robench-transfer-cost-"))
    runs = iter(range(10**6))

    def transfer_cell():  # the first model crafts and writes; the others read; each answers the examples
        paths = {EPS: transfer.examples_path(folder, "transfer", next(runs), EPS, {})}
        for _ in targets:
            made = transfer.examples(paths, {}, Transfer(), lambda: surrogate, images, labels, BATCH, "cpu",
                                     reseed=lambda eps: torch.manual_seed(0))
            transfer_sweep(surrogate, made, labels, labels, probs, BATCH, "cpu")

    def pgd_cell_and_forwards():  # one PGD-10 cell, then N forward passes of the images
        attack_sweep(surrogate, PGD(steps=10, loss="ce", early_exit=False), [EPS], images, labels, labels, BATCH, "cpu")
        for _ in targets:
            logits_of(surrogate, images, BATCH, "cpu")

    transfer_s, yardstick_s = interleaved(transfer_cell, pgd_cell_and_forwards, repeats=3)
    ratio = transfer_s / yardstick_s
    report(f"transfer cell over {n_models} models / (PGD-10 cell + {n_models} forward passes)", ratio, f"<= {GOAL}",
           ratio <= GOAL, f"({transfer_s:.2f} s against {yardstick_s:.2f} s, {IMAGES} images, ViT-Ti/16 at {SIZE} px)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
