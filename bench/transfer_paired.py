"""Which strategy loses more of what it got right to one attack: paired, on the images both got right.

The page's paired tests compare robust accuracy over all attacked images, where a model that is
right on more clean images starts ahead. For the transfer question ("does the public backbone's
examples fool a PEFT model more than a fully fine-tuned one?") the fair comparison is on the images
both models classify correctly: per pair of strategies, McNemar's exact test on those images
(survived under one, fooled under the other), Holm-corrected over the pairs. One seed per pair
(the first the run has).

    python bench/transfer_paired.py RUN_FOLDER [ATTACK] [EPS]

ATTACK defaults to ``transfer(source=pretrained)``, EPS to the run's largest.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests


def main(run: str, attack: str = "transfer(source=pretrained)", eps: str | None = None) -> None:
    folder = Path(run)
    labels = np.array(json.loads((folder / "config.json").read_text())["attacked"]["labels"])
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["status"] == "ok"]
    seed = min(r["seed"] for r in rows)
    level = float(eps) if eps is not None else max(r["eps"] for r in rows if r["attack"] == attack)
    clean = {r["strategy"]: np.array(r["clean_pred"]) == labels for r in rows if r["attack"] == "none" and r["seed"] == seed}
    kept = {r["strategy"]: np.array(r["adv_pred"]) == labels for r in rows
            if r["attack"] == attack and r["seed"] == seed and abs(r["eps"] - level) < 1e-12 and r.get("attack_black_box")}
    found = []
    for a, b in itertools.combinations(sorted(kept), 2):
        both = clean[a] & clean[b]
        only_a, only_b = int((kept[a] & ~kept[b] & both).sum()), int((kept[b] & ~kept[a] & both).sum())
        p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
        found.append((a, b, int(both.sum()), int((kept[a] & both).sum()), int((kept[b] & both).sum()), p))
    if not found:
        print(f"no two black-box rows of {attack} at eps {level:g} (seed {seed}) in {folder}")
        return
    holm = multipletests([f[-1] for f in found], method="holm")[1]
    print(f"{attack} at eps {level:g}, seed {seed}: on the images both strategies got right, how many each kept")
    for (a, b, n, kept_a, kept_b, p), p_holm in zip(found, holm):
        print(f"  {a} {kept_a}/{n} vs {b} {kept_b}/{n}: McNemar exact p = {p:.2g}, Holm over {len(found)} pairs p = {p_holm:.2g}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
