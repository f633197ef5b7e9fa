"""The GPU check of issue 13, for a machine with one CUDA GPU (CI never runs it).

1. The GPU-only tests (tests/test_compute.py's CUDA cases).
2. ViT-B/16 (random init: no weights are reachable there) trained by robench's own loop,
   ``robench.pipeline.train.train``, for STEPS steps of batch 128 at 224 px, in bf16 autocast and in fp32:
   images/s and MFU. MFU counts 3x the forward FLOPs (torch's FlopCounterMode) per image against
   the H200's dense peak: 989 TFLOP/s bf16, 67 TFLOP/s fp32 (FP32 without tensor cores: robench
   leaves TF32 off, so fp32 is true fp32).
3. PGD-10 (early exit and last iterate) and AutoAttack on 512 images, through robench's attack
   sweep (exact arithmetic, fp32): images/s.
4. The study-2024 preset on a HAM10000 lesion subset, with ViT-Ti/16 weights in place of ViT-B/16's
   (not reachable there), 1 seed, 1 epoch, 128 attacked images: its wall time and page.

    python bench/gpu_check.py HAM_DIR VIT_TINY_WEIGHTS OUT_DIR
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robench.cli import main as robench  # noqa: E402
from robench.pipeline.evaluate import attack_sweep  # noqa: E402
from robench.pipeline.models import BackboneSpec, Normalized, create_backbone  # noqa: E402
from robench.pipeline.train import train  # noqa: E402
from robench.strategy import Recipe  # noqa: E402
from robench_plugins.attacks.autoattack import AutoAttack  # noqa: E402
from robench_plugins.attacks.pgd import PGD  # noqa: E402
from robench_plugins.strategies.full import Full  # noqa: E402

PEAK = {"bf16": 989e12, "fp32": 67e12}
SMOKE = bool(os.environ.get("GPU_CHECK_SMOKE"))  # a CPU dry run of parts 2 and 3 at toy sizes, to test this script
STEPS, BATCH, SIZE, N_ATTACKED = (2, 8, 32, 16) if SMOKE else (200, 128, 224, 512)
DEVICE = torch.device("cpu" if SMOKE else "cuda")


def vit_b() -> Normalized:
    torch.manual_seed(0)
    model, mean, std = create_backbone(BackboneSpec("vit_base_patch16_224", SIZE, pretrained=False), 7)
    return Normalized(Full().adapt(model), mean, std).to(DEVICE)


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def training(device: torch.device) -> None:
    model = vit_b()
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, SIZE, SIZE, device=device))
    train_flops_per_image = 3 * counter.get_total_flops()
    n = STEPS * BATCH
    images = torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 7, (n,), device=device)
    val = (images[:BATCH], labels[:BATCH])
    recipe = Recipe(epochs=1, warmup_epochs=0, batch_size=BATCH, lr=1e-4, augment=False)
    for precision in ("bf16", "fp32"):
        model = vit_b()
        synchronize()
        started = time.perf_counter()
        train(model, Full(), recipe, (images, labels), val, 7, 0, device, use_cached_features=False, precision=precision)
        synchronize()
        seconds = time.perf_counter() - started
        rate = n / seconds
        print(f"train ViT-B/16 {precision}: {STEPS} steps of {BATCH} at {SIZE} px in {seconds:.1f} s: {rate:.0f} img/s, "
              f"MFU {100 * rate * train_flops_per_image / PEAK[precision]:.1f}% of {PEAK[precision] / 1e12:.0f} TFLOP/s", flush=True)


def attacks(device: torch.device) -> None:
    model = vit_b().eval().requires_grad_(False)
    images = torch.randint(0, 256, (N_ATTACKED, 3, SIZE, SIZE), dtype=torch.uint8)  # on the CPU, as a run keeps them
    with torch.no_grad():
        labels = torch.cat([model(chunk.to(device).float() / 255).argmax(1).cpu() for chunk in images.split(128)])
    for name, attack in (("PGD-10 early exit", PGD()), ("PGD-10 last iterate", PGD(early_exit=False)),
                         ("AutoAttack (standard)", AutoAttack())):
        synchronize()
        started = time.perf_counter()
        metrics = attack_sweep(model, attack, [4 / 255], images, labels, labels, 256, device, precision="fp32")
        synchronize()
        seconds = time.perf_counter() - started
        print(f"{name} at 4/255 on {N_ATTACKED} images (ViT-B/16, random init, its own predictions as labels): {seconds:.1f} s, "
              f"{N_ATTACKED / seconds:.0f} img/s, robust {100 * metrics[4 / 255]['robust_acc']:.1f}%", flush=True)


def study(ham: Path, weights: Path, out: Path) -> None:
    started = time.perf_counter()
    code = robench(["run", "--preset", "study-2024", "--data-dir", str(ham), "--backbone", "vit_tiny_patch16_224",
                    "--weights", str(weights), "--seeds", "0", "--epochs", "1", "--attack-samples", "128", "--quiet",
                    "--out", "/tmp/study-2024-gpu-check", "--leaderboard-dir", str(out), "--name", "study-2024-gpu-check"])
    print(f"study-2024 preset on {ham} (ViT-Ti/16 weights, 1 seed, 1 epoch, 128 attacked images): exit {code}, "
          f"{time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    ham, weights, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    device = DEVICE
    if SMOKE:
        for part in (training, attacks):
            part(device)
        return
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "-n", "0", "tests/test_compute.py"],
                           cwd=REPO, capture_output=True, text=True)
    failed = [line for line in tests.stdout.splitlines() if line.startswith(("FAILED", "E  "))]
    print("GPU tests (tests/test_compute.py):", tests.stdout.strip().splitlines()[-1], *failed[:12], sep="\n", flush=True)
    if os.environ.get("GPU_CHECK_ONLY_STUDY"):
        study(ham, weights, out)
        return
    for part in (training, attacks):
        try:
            part(device)
        except Exception as exc:  # noqa: BLE001  (one failed part must not lose the others' figures)
            print(f"{part.__name__} failed: {type(exc).__name__}: {exc}", flush=True)
    study(ham, weights, out)


if __name__ == "__main__":
    main()
