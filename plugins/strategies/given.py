"""A model trained elsewhere, evaluated and attacked as robench's own: ``robench eval`` and robench.benchmark.

Medical-imaging engineers already have fine-tuned models; this strategy lets them through the same
attacks, worst case, intervals and records as the models robench trains, with nothing trained.
``given:file=FILE`` loads FILE (a state dict, .safetensors or a torch file, as timm saves them) into
the ``--backbone`` built with the dataset's classes, head included; without ``file`` the backbone
is evaluated as it is built (the ``module`` provider's model, which robench.benchmark uses). The
head must answer the dataset's classes in its order (``robench list --kind dataset`` names them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import robench
from robench.errors import PluginError
from robench.strategy import Recipe, Strategy


class Given(Strategy):
    """A model trained elsewhere (file=FILE: its state dict for --backbone), evaluated and attacked, not trained."""

    name = "given"
    trains = False
    recipe = Recipe(epochs=1)  # never used: nothing trains

    def __init__(self, file: str | None = None):
        if file is not None and not Path(file).is_file():
            raise ValueError(f"file {file} not found: pass the checkpoint of the model to evaluate")
        self.file = file

    def adapt(self, model: nn.Module) -> nn.Module:
        if self.file is not None:
            load_checkpoint(model, Path(self.file))
        model.requires_grad_(False)
        return model


def load_checkpoint(model: nn.Module, file: Path) -> None:
    """Load ``file`` into ``model``, or one line naming what does not fit (the head's class count first)."""
    from timm.models import load_state_dict  # reads safetensors and torch files, unwrapping 'state_dict'/'model'

    try:
        state = load_state_dict(str(file), use_ema=False)
    except Exception as exc:  # noqa: BLE001  (a corrupt or foreign file: say which)
        raise PluginError(f"given: cannot read {file} as a state dict ({type(exc).__name__}): save it with "
                          "torch.save(model.state_dict(), FILE) or safetensors") from None
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise PluginError(f"given: {file} has {key} of shape {tuple(tensor.shape)} where the model has "
                              f"{tuple(own[key].shape)}" + _classes_hint(key, tensor, own[key]))
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise PluginError(f"given: {file} is not a checkpoint of this --backbone: missing {_few(missing)}, unexpected "
                          f"{_few(unexpected)}; pass the --backbone it was fine-tuned from")
    with torch.no_grad():
        model.load_state_dict(state)


def _classes_hint(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> str:
    if theirs.ndim and ours.ndim and theirs.shape[1:] == ours.shape[1:]:
        return f": the checkpoint answers {theirs.shape[0]} classes, the dataset has {ours.shape[0]}"
    return ": pass the --backbone (and --image-size) it was fine-tuned with"


def _few(keys: list[str]) -> str:
    return "none" if not keys else ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


@robench.hookimpl
def register_strategies(register):
    register(Given)
