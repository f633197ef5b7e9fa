"""Benchmark (issue 13): bf16 training on a CPU with native bf16, against fp32.

1. Throughput: one training step of ViT-Ti/16 (full fine-tuning, AdamW, batch 32) at 112 and
   224 px, bf16 autocast against fp32, interleaved, one thread; prints the ratio (goal >= 1.4).
2. Accuracy parity: full fine-tuning of ViT-Ti/16 (real weights) on the HAM10000 subset of
   bench/attack_audit.py (1,000 images, SIZE px, EPOCHS epochs), seeds 0-2, in each precision,
   through ``robench run``; prints clean and balanced accuracy per seed, the wall time of
   training in each precision, and the paired comparison the leaderboard uses
   (robench.report.uncertainty.compare: bf16 - fp32 accuracy on the same test images, its 95%
   two-level bootstrap interval, McNemar per seed combined over seeds). A difference is only
   called one when its interval excludes 0.

    python bench/bf16_cpu.py [DATA_DIR] [WEIGHTS] [OUT] [SIZE] [EPOCHS]   # SIZE 112, EPOCHS 6 by default
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import interleaved, report  # noqa: E402

from robench.cli import main as robench  # noqa: E402
from robench.core.results import read_rows  # noqa: E402
from robench.pipeline import compute  # noqa: E402
from robench.pipeline.models import BackboneSpec, Normalized, create_backbone  # noqa: E402
from robench.report.uncertainty import compare  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED / "data" / "ham10000"
WEIGHTS = Path(sys.argv[2]) if len(sys.argv) > 2 else SHARED / "weights" / "vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors"
TARGET = 1.4
SIZE = int(sys.argv[4]) if len(sys.argv) > 4 else 112
EPOCHS = int(sys.argv[5]) if len(sys.argv) > 5 else 6  # at 3, fp32's own seeds spanned 21 points of accuracy at 112 px
OUT = Path(sys.argv[3]) if len(sys.argv) > 3 else REPO / "runs" / (f"bf16-cpu-{EPOCHS}ep" + ("" if SIZE == 112 else f"-{SIZE}px"))


def step_time(size: int) -> tuple[float, float]:
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec("vit_tiny_patch16_224", size, pretrained=False), 7)
    model = Normalized(vit, mean, std).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.rand(32, 3, size, size), torch.randint(0, 7, (32,))

    def step(precision):
        def run():
            with compute.autocast("cpu", precision):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return run
    return interleaved(step("fp32"), step("bf16"), repeats=5)


def accuracy(precision: str) -> list[dict]:
    out = OUT / precision
    code = robench(["run", "--dataset", "ham10000", "--data-dir", str(DATA), "--subset", "1000", "--image-size", str(SIZE),
                    "--backbone", "vit_tiny_patch16_224", "--weights", str(WEIGHTS), "--strategies", f"full:epochs={EPOCHS}",
                    "--attacks", "", "--seeds", "0,1,2", "--train-precision", precision, "--quiet",
                    "--out", str(out), "--leaderboard-dir", str(out)])
    assert code == 0
    rows = sorted((r for r in read_rows(out) if r["attack"] == "none"), key=lambda r: r["seed"])
    return rows


def main() -> None:
    torch.set_num_threads(1)
    if not compute.fast_bf16(torch.device("cpu")):
        sys.exit("this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to measure")
    ratios = []
    for size in (112, 224):
        fp32, bf16 = step_time(size)
        ratios.append(fp32 / bf16)
        print(f"ViT-Ti/16 training step at {size} px, batch 32: fp32 {fp32:.3f} s, bf16 {bf16:.3f} s, speed-up {fp32 / bf16:.2f}x")
    report("bf16 / fp32 training throughput on this CPU, smallest of 112 and 224 px", min(ratios), f">= {TARGET}", min(ratios) >= TARGET)
    found = {precision: accuracy(precision) for precision in ("fp32", "bf16")}
    labels = np.array(json.loads((OUT / "fp32" / "config.json").read_text())["attacked"]["labels"])
    for precision, rows in found.items():
        print(f"{precision}: " + ", ".join(f"seed {r['seed']}: acc {100 * r['clean_acc']:.1f}%, bacc {100 * r['clean_bacc']:.1f}%"
                                           for r in rows)
              + f"; training {sum(r['train_seconds'] for r in rows):.0f} s for {len(rows)} models")
    hits = {precision: {r["seed"]: np.array(r["clean_pred"]) == labels for r in rows} for precision, rows in found.items()}
    difference, low, high, p = compare(hits["bf16"], hits["fp32"])
    verdict = "a difference" if low > 0 or high < 0 else "no difference shown"
    print(f"clean accuracy bf16 - fp32 on the same {len(labels)} test images: {100 * difference:+.1f} points, 95% interval "
          f"[{100 * low:+.1f}, {100 * high:+.1f}], McNemar p {p:.3f} over {len(hits['fp32'])} seeds: {verdict}")
    speed = sum(r["train_seconds"] for r in found["fp32"]) / sum(r["train_seconds"] for r in found["bf16"])
    print(f"robench's own training at {SIZE} px (the runs above): bf16 {speed:.2f}x the speed of fp32")


if __name__ == "__main__":
    main()
