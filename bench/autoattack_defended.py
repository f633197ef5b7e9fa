"""Benchmark (issue 28): on a defended real-data model, robench's AutoAttack costs at most 5x
PGD-100x5 on the same images, and fools every image torchattacks' AutoAttack fools.

The model: VPT-shallow with PGD adversarial training (eps 2/255, 7 steps), ViT-Ti/16 at 112 px on
a class-stratified HAM10000 subset of about 1,000 images, 3 epochs, seed 0, trained by the
`robench run` command below (read from its checkpoint on later calls). The images: the first N
of its attacked test images that it classifies correctly (N=24 by default; the model keeps about
half of them at 1/255, which is what makes AutoAttack expensive). At each eps, one thread, one run
each: PGD-100x5 (robench's, margin loss, early exit), torchattacks' AutoAttack (standard, the
reference: all 6 targets) and robench's (each image leaves APGD once fooled, 3 MALT-ranked
targets). Printed: seconds per image of each, the survivors of each, and the images only the
reference fooled, which must be none.

    python bench/autoattack_defended.py [N] [EPS,...]     # e.g. 24 1/255,2/255 (the defaults)

The data and weights are read from ../shared (ROBENCH_DATA_DIR and ROBENCH_WEIGHTS move them); the
run folder is runs/autoattack-defended.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from _run_models import RunModels  # noqa: E402
from _timing import report, timed  # noqa: E402

from robench.attack import exact_arithmetic, fools, frozen  # noqa: E402
from robench.cli import main as robench_main  # noqa: E402
from robench.cli.run_command import parse_eps  # noqa: E402
from robench_plugins.attacks.autoattack import AutoAttack  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402

SHARED = REPO.parent / "shared"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 24
EPS = parse_eps(sys.argv[2] if len(sys.argv) > 2 else "1/255,2/255")
DATA = Path(os.environ.get("ROBENCH_DATA_DIR", SHARED / "data" / "ham10000"))
WEIGHTS = Path(os.environ.get("ROBENCH_WEIGHTS", SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"))
OUT = REPO / "runs" / "autoattack-defended"
TARGET = 5.0
COMMAND = ["run", "--dataset", "ham10000", "--data-dir", str(DATA), "--subset", "1000", "--image-size", "112",
           "--backbone", "vit_tiny_patch16_224", "--weights", str(WEIGHTS), "--strategies", "vpt_shallow",
           "--defenses", "pgd_at:eps=2/255", "--epochs", "3", "--attacks", "pgd", "--eps", "1/255", "--seeds", "0",
           "--attack-samples", "120", "--escalation", "off", "--threads", "1", "--quiet", "--out", str(OUT), "--name", "autoattack-defended"]


def defended_model():
    """The PGD-AT model (trained by robench run on first use) and its first N clean-correct attacked images."""
    if not (OUT / "results.jsonl").exists():
        robench_main(COMMAND)
    run = RunModels(OUT)
    _, _, model = next(run.models())
    with torch.no_grad(), exact_arithmetic():
        correct = model(run.x).argmax(1) == run.y
    return model, run.x[correct][:N], run.y[correct][:N]


def main() -> None:
    torch.set_num_threads(1)
    model, x, y = defended_model()
    worst = 0.0
    attacks = {"PGD-100x5": PGD(steps=100, restarts=5), "torchattacks' AutoAttack": AutoAttack(early_exit=False),
               "robench's AutoAttack": AutoAttack()}
    with exact_arithmetic(), frozen(model):
        for eps in EPS:
            seconds, fooled = {}, {}
            for name, attack in attacks.items():
                torch.manual_seed(0)
                found = {}
                seconds[name] = timed(lambda attack=attack, found=found: found.setdefault("x", attack.perturb(model, x, y, eps)))
                with torch.no_grad():
                    fooled[name] = fools(model(found["x"]), y)
                print(f"eps {255 * eps:g}/255, {len(y)} images: {name} {seconds[name] / len(y):.2f} s per image, "
                      f"{int((~fooled[name]).sum())} survive", flush=True)
            ours, reference = fooled["robench's AutoAttack"], fooled["torchattacks' AutoAttack"]
            missed = int((reference & ~ours).sum())
            ratio = seconds["robench's AutoAttack"] / seconds["PGD-100x5"]
            speedup = seconds["torchattacks' AutoAttack"] / seconds["robench's AutoAttack"]
            worst = max(worst, ratio)
            print(f"eps {255 * eps:g}/255: robench's AutoAttack = {ratio:.2f}x PGD-100x5, "
                  f"{speedup:.2f}x faster than the reference; "
                  f"images only the reference fooled: {missed}, only robench's: {int((ours & ~reference).sum())}", flush=True)
            assert missed == 0, "robench's AutoAttack must never be weaker than the reference"
    report("robench's AutoAttack time / PGD-100x5 time on a defended model, largest over eps", worst, f"<= {TARGET}",
           worst <= TARGET)


if __name__ == "__main__":
    main()
