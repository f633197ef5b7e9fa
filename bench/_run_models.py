"""A finished run's trained models and attacked images, for benchmarks that attack them again.

The run's own command (config.json) is parsed back into its settings, and each model is rebuilt
from the run's checkpoints (robench resumes them: nothing is trained again).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import torch

from robench.cli.parser import build_parser
from robench.cli.run_command import config_from_args
from robench.core import results
from robench.pipeline import runner
from robench.pipeline.prepare import test_arrays


class RunModels:
    """``config``, ``x`` (the attacked images in [0, 1]) and ``y`` (their labels) of a run folder."""

    def __init__(self, run: Path):
        self.run = Path(run)
        self.config_json = results.read_config(self.run)
        argv = shlex.split(self.config_json["command"])[1:]
        self.planned = runner.plan(config_from_args(build_parser().parse_args(argv), argv))
        self.config = self.planned.config
        self.prepared = runner.prepare_data(self.config, self.planned.dataset)
        images, labels = test_arrays(self.prepared)
        attacked = self.prepared.attacked
        keep = torch.as_tensor(attacked) if attacked is not None else torch.arange(len(labels))
        self.x, self.y = images[keep].float() / 255, labels[keep]

    def models(self) -> Iterator[tuple[str, int, torch.nn.Module]]:
        """(strategy label, seed, the model in eval mode) of every model of the run."""
        for strategy in self.planned.strategies:
            for seed in self.config.seeds:
                model, _ = runner.train_model(self.planned, strategy, seed, self.prepared)
                yield strategy.label, seed, model
