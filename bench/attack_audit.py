"""Attack audit (issue 10): which loss PGD should default to, and whether robench's attacks equal an
independent implementation image by image on real-data models.

The run: ViT-Ti/16 (ImageNet weights) at 112x112 on a class-stratified subset of about 1,000
HAM10000 images, every built-in strategy for 3 epochs, seed 0, 120 attacked test images, FGSM
and PGD-10 on each loss (ce, margin, dlr) at eps 0.001, 0.002, 0.005 and 0.01. It prints
1. robust accuracy per strategy, attack and eps: the measurement behind PGD's default loss;
2. per model and attack, the images on which robench's prediction after the attack differs from
   an independent replay: FGSM and PGD written in tests/test_exact_attacks.py (sharing no code
   with robench's attacks) and torchattacks' FGSM and PGD, each seeded as the run seeds its
   attacks, in exact arithmetic; robench must differ on none;
3. the same replay of the cross-entropy attacks with subnormal floats flushed (what robench
   did before issue 10): how many images the old numerics overstated as robust.

    python bench/attack_audit.py [DATA_DIR] [WEIGHTS] [OUT]   # OUT defaults to runs/attack-audit

A second call reuses OUT's checkpoints and rows (robench resumes), so only the replay runs again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
import torchattacks

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robench.attack import CLEAN  # noqa: E402
from robench.core import results  # noqa: E402
from robench.pipeline import runner
from robench.pipeline.models import BackboneSpec  # noqa: E402
from robench.pipeline.options import parse_specs  # noqa: E402
from robench.pipeline.train import to_pixels  # noqa: E402
from tests.test_exact_attacks import independent_fgsm, independent_pgd, replay_sweep  # noqa: E402

SHARED = REPO.parent / "shared"
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED / "data" / "ham10000"
WEIGHTS = Path(sys.argv[2]) if len(sys.argv) > 2 else SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
OUT = Path(sys.argv[3]) if len(sys.argv) > 3 else REPO / "runs" / "attack-audit"
EPS = [0.001, 0.002, 0.005, 0.01]
STEPS = 10
ATTACKS = "fgsm,fgsm:loss=margin,fgsm:loss=dlr,pgd:loss=ce,pgd,pgd:loss=dlr"
SEED = 0

CONFIG = runner.RunConfig(
    dataset="ham10000", data_dir=DATA, subset=1000,
    backbone=BackboneSpec("vit_tiny_patch16_224", 112, WEIGHTS),
    strategies=parse_specs("full,linear_probe,vpt_shallow,vpt_deep,lora", "strategy"),
    attacks=parse_specs(ATTACKS, "attack"), eps=EPS, seeds=[SEED], attack_samples=120,
    recipe_overrides={"epochs": 3}, device="cpu", out=OUT, leaderboard_dir=OUT, name="attack-audit",
    command=f"python bench/attack_audit.py  # robench run --subset 1000 --image-size 112 --epochs 3 --attacks {ATTACKS}",
)


def independent(attack: str):
    """The replays of an attack label: name -> function(model, x, y, eps)."""
    if attack == "fgsm":
        return {"own": independent_fgsm, "torchattacks": lambda m, x, y, e: torchattacks.FGSM(m, eps=e)(x, y)}
    if attack == "pgd(loss=ce)":
        return {"own": lambda m, x, y, e: independent_pgd(m, x, y, e, STEPS, "ce", keep_first_fooled=True),
                "torchattacks": lambda m, x, y, e: torchattacks.PGD(m, eps=e, alpha=2.5 * e / STEPS, steps=STEPS)(x, y)}
    if attack == "pgd":
        return {"own": lambda m, x, y, e: independent_pgd(m, x, y, e, STEPS, "margin", keep_first_fooled=True)}
    return {}


def replay(model, x, labels, clean, attack_fn, flush: bool) -> dict[float, torch.Tensor]:
    """Predictions after ``attack_fn`` at every eps, seeded and batched as the run's sweep is,
    with subnormal floats flushed to zero or not."""
    torch.set_flush_denormal(flush)
    try:
        return replay_sweep(model, x, labels, clean, attack_fn, EPS, SEED, CONFIG.attack_batch_size)
    finally:
        torch.set_flush_denormal(False)


def main() -> None:
    torch.set_num_threads(1)
    runner.run(CONFIG)
    rows = pd.DataFrame(results.latest(results.read_rows(OUT)))
    config = results.read_config(OUT)
    attacked = rows[rows["attack"] != CLEAN]
    table = attacked.pivot_table(index=["strategy", "eps"], columns="attack", values="robust_acc") * 100
    print("Robust accuracy (%) over the 120 attacked images, seed 0:\n")
    print(table.round(2).to_markdown())

    planned = runner.plan(CONFIG)
    strategies = planned.strategies
    prepared = runner.prepare_data(planned.config, planned.dataset)
    test_images = prepared.images.images[prepared.split.test][torch.as_tensor(prepared.attacked)]
    x, labels = to_pixels(test_images), torch.tensor(config["attacked"]["labels"])
    print("\nImages whose prediction after the attack differs from robench's row (of 120 per eps):\n")
    lines = []
    for strategy in strategies:
        model, _ = runner.train_model(planned, strategy, SEED, prepared)  # from its checkpoint
        clean = torch.tensor(rows[(rows["strategy"] == strategy.label) & (rows["attack"] == CLEAN)]["clean_pred"].iloc[0])
        for attack in ("fgsm", "pgd(loss=ce)", "pgd"):
            ours = {r.eps: torch.tensor(r.adv_pred) for r in attacked[(attacked["strategy"] == strategy.label)
                                                                      & (attacked["attack"] == attack)].itertuples()}
            for name, fn in independent(attack).items():
                cross_entropy = attack != "pgd"
                for flush in (False, True) if name == "own" and cross_entropy else (False,):
                    theirs = replay(model, x, labels, clean, fn, flush)
                    differ = {eps: int((ours[eps] != theirs[eps]).sum()) for eps in EPS}
                    more_robust = {eps: int(((ours[eps] == labels) & (theirs[eps] != labels)).sum()) for eps in EPS}
                    lines.append({"strategy": strategy.label, "attack": attack,
                                  "replay": name + (" (subnormals flushed)" if flush else ""),
                                  **{f"differ@{eps:g}": differ[eps] for eps in EPS},
                                  "robench robust, replay fooled (all eps)": sum(more_robust.values())})
    print(pd.DataFrame(lines).to_markdown(index=False))


if __name__ == "__main__":
    main()
