"""A whole ``nn.Module`` saved with ``torch.save(model)``: ``--backbone module:NAME --weights FILE``.

How robench.benchmark hands a user's model to the run (with the ``given`` strategy, which trains
nothing): the model maps images in [0, 1] to logits, normalising inside, so its mean is 0 and its
std 1 and robench's Normalized wrapper changes nothing. NAME is only its label on the page. The
file is unpickled (``weights_only=False``): it runs code, so pass only a file you made yourself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import robench
from robench.backbone import Backbone
from robench.errors import RobenchError

SAVE = "save it with torch.save(model, FILE)"


class Module(Backbone):
    """A whole model saved with torch.save(model): module:NAME --weights FILE, images in [0, 1] to logits."""

    name = "module"
    state_dict_weights = False

    def check_weights(self, model: str, weights: Path | None, pretrained: bool) -> None:
        if weights is None:
            raise RobenchError(f"--backbone module:{model} needs --weights FILE, the model itself: {SAVE}")

    def create(self, model: str, *, num_classes: int, image_size: int, weights: Path | None,
               pretrained: bool) -> tuple[nn.Module, tuple, tuple]:
        try:
            loaded = torch.load(weights, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001  (a foreign or broken file: one line)
            why = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise RobenchError(f"cannot load {weights} as a model ({why}): {SAVE}, with its class importable where "
                               "robench runs (in a module, not only in the script that saved it)") from None
        if not isinstance(loaded, nn.Module):
            raise RobenchError(f"{weights} holds a {type(loaded).__name__}, not a model: {SAVE} (not its state_dict)")
        answers = _classes_answered(loaded, image_size)
        if isinstance(answers, str):
            raise RobenchError(f"the model in {weights} gives {answers} for a 3x{image_size}x{image_size} image in [0, 1]: "
                               "pass the image size it takes (--image-size, image_size=)")
        if answers != num_classes:
            raise RobenchError(f"the model in {weights} answers {answers} classes on a 3x{image_size}x{image_size} image, "
                               f"the dataset has {num_classes}: pass a model with one logit per class of the dataset, in its order")
        return loaded, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _classes_answered(model: nn.Module, image_size: int) -> int | str:
    """How many logits the model gives one image; a text saying why for a model that gives none."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, 3, image_size, image_size))
    except Exception as exc:  # noqa: BLE001
        return f"nothing ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})"
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        return f"no N x classes tensor (got {type(logits).__name__} {getattr(logits, 'shape', '')})"
    return logits.shape[1]


@robench.hookimpl
def register_backbones(register):
    register(Module)
