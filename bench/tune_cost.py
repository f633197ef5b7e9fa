"""Benchmark (issue 23): what a ``--tune`` search costs against one training of the same strategy.

For each strategy, times the search (``--tune lr,weight_decay`` at the default budget, 12 trials
of at most 2 epochs, TPE with successive-halving pruning) and one training of the strategy's
default recipe (its own epochs), one thread, in a fresh run folder each, and prints their ratio.
Issue 23 asks at most 3: pruning stops most trials after an epoch. By default on the synthetic
dataset with the micro ViT (seconds); give a run's flags to measure on real data instead:

    python bench/tune_cost.py
    python bench/tune_cost.py --dataset ham10000 --data-dir ../shared/data/ham10000 --subset 1000 --image-size 112 \
        --backbone vit_tiny_patch16_224 --weights ../shared/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors \
        --strategies linear_probe,vpt_shallow
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _timing import report, timed  # noqa: E402

from robench.cli.parser import build_parser  # noqa: E402
from robench.cli.run_command import config_from_args  # noqa: E402
from robench.pipeline.model_job import numerics, train_model, train_trial  # noqa: E402
from robench.pipeline.plan import plan  # noqa: E402
from robench.pipeline.prepare import prepare_data  # noqa: E402
from robench.pipeline.tuning import tune  # noqa: E402

TARGET = 3.0
DEFAULT = ["--dataset", "synthetic", "--strategies", "full,linear_probe,vpt_shallow,vpt_deep,lora"]


def main(flags: list[str]) -> None:
    torch.set_num_threads(1)
    ratios = {}
    with tempfile.TemporaryDirectory() as folder, numerics():
        argv = ["run", *(flags or DEFAULT), "--attacks", "fgsm", "--seeds", "0", "--tune", "lr,weight_decay",
                "--out", str(Path(folder) / "run")]
        planned = plan(config_from_args(build_parser().parse_args(argv), argv))
        planned.config.out.mkdir(parents=True)
        prepared = prepare_data(planned.config, planned.dataset)
        for strategy in planned.strategies:
            one = planned._replace(strategies=[strategy])
            training = timed(lambda: train_model(one, strategy, 0, prepared, keep=False))
            record = {}
            search = timed(lambda: record.update(tune(one, prepared, train_trial)[1]))
            found = record["strategies"][strategy.label]
            epochs = sum(t["epochs"] for t in found["trials"])
            ratios[strategy.label] = search / training
            print(f"{strategy.label}: search {search:.1f} s ({len(found['trials'])} trials, {epochs} epochs in all), "
                  f"one training {training:.1f} s ({strategy.recipe.epochs} epochs): ratio {search / training:.2f}")
    worst = max(ratios, key=ratios.get)
    report(f"--tune search / one training, worst strategy ({worst})", ratios[worst], f"<= {TARGET}", ratios[worst] <= TARGET)


if __name__ == "__main__":
    main(sys.argv[1:])
