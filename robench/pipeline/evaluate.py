"""Clean and adversarial evaluation of a trained model, under both published protocols.

Only test images the model classifies correctly are attacked: an image that is already wrong
counts as a failure in the all-images protocol (RobustBench) and is outside the clean-correct
protocol (the seed study), so attacking it would change neither number.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from robench.attack import (
    Attack,
    MinimalAttack,
    check_perturbation,
    exact_arithmetic,
    frozen,
    perturbation_size,
    slack,
)
from robench.core.metrics import accuracy, balanced_accuracy, robust_metrics
from robench.core.progress import progress
from robench.pipeline.answers import Answers
from robench.pipeline.calibration import calibration, reliability
from robench.pipeline.compute import autocast
from robench.pipeline.train import to_pixels


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Predicted classes for uint8 (or [0, 1] float) images, in eval mode."""
    return logits_of(model, images, batch_size, device).argmax(1)


@torch.no_grad()
def logits_of(model: nn.Module, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """The model's logits (float32, on the CPU) for uint8 (or [0, 1] float) images, in eval mode."""
    model.eval()
    logits = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        batch = to_pixels(batch) if batch.dtype == torch.uint8 else batch
        logits.append(model(batch).float().cpu())
    return torch.cat(logits) if logits else torch.empty(0, 0)


def clean_metrics(labels: torch.Tensor, preds: torch.Tensor) -> dict:
    hits = preds == labels
    return {"n_test": len(labels), "clean_acc": accuracy(hits), "clean_bacc": balanced_accuracy(labels, hits)}


def clean_calibration(labels: torch.Tensor, logits: torch.Tensor) -> dict:
    """The clean row's ECE, NLL and reliability diagram, over every test image (robench.pipeline.calibration)."""
    probs = torch.softmax(logits, dim=1)
    return calibration(probs, labels) | {"reliability": reliability(probs, labels)}


def attack_sweep(
    model: nn.Module,
    attack: Attack,
    eps_values: list[float],
    images: torch.Tensor,
    labels: torch.Tensor,
    clean_preds: torch.Tensor,
    batch_size: int,
    device,
    label: str = "",
    precision: str = "fp32",
    clean_probs: torch.Tensor | None = None,
) -> dict[float, dict]:
    """Attack the clean-correct test images at every eps; return the metrics of each eps.

    The attack runs in exact arithmetic (robench.attack.exact_arithmetic: no subnormal flush, no
    autocast), whatever the training used; ``precision="bf16"`` then runs its forward passes, and
    the check of what survived them, under bf16 autocast on CUDA, while the images, perturbations
    and eps checks stay fp32. Each eps's metrics carry ``adv_pred``: the prediction on every given
    image after the attack (an image wrong on clean is not attacked and keeps its clean
    prediction), from which every metric of the row can be recomputed and the worst case over
    attacks is taken per image (robench.report.worst_case). With ``clean_probs`` (the model's
    softmax on the given images), each eps's metrics also carry the ECE and NLL of the answers
    after the attack (robench.pipeline.calibration); a minimal attack's rows have none.
    """
    model.eval()
    correct = (clean_preds == labels).nonzero().flatten()
    adv_preds = {eps: clean_preds.clone() for eps in eps_values}
    minimal = isinstance(attack, MinimalAttack)
    adv_probs = None if clean_probs is None or minimal else {eps: clean_probs.clone() for eps in eps_values}
    min_eps = torch.zeros(len(labels)) if minimal else None  # a clean-wrong image is fooled at eps 0
    started = time.perf_counter()
    chunks = correct.split(batch_size) if len(correct) else ()  # a model with no correct image has nothing to attack
    with frozen(model), exact_arithmetic(), autocast(device, precision):
        for chunk in progress(chunks, desc=f"attack {label}", unit="batch", phase=f"attack {attack.name}"):
            x = to_pixels(images[chunk].to(device))
            y = labels[chunk].to(device)
            if minimal:
                min_eps[chunk] = _minimize(model, attack, x, y, chunk, eps_values, adv_preds)
                continue
            with Answers(model, autocast_on=precision == "bf16" and torch.device(device).type in ("cpu", "cuda")) as answers:
                for eps, adv in attack.sweep(model, x, y, eps_values):
                    check_perturbation(f"attack {attack.name}", attack.norm, adv, x, eps)
                    adv_preds[eps][chunk], probs = answers.answer(adv)
                    if adv_probs is not None:
                        adv_probs[eps][chunk] = probs
    seconds = time.perf_counter() - started
    n_correct = len(correct)
    records = {} if min_eps is None else {
        "eps_max": attack.eps_max, "min_eps": [None if math.isinf(e) else e for e in min_eps.tolist()]}
    calibrated = {eps: {} if adv_probs is None else calibration(adv_probs[eps], labels) for eps in eps_values}
    return {eps: robust_metrics(labels, adv_preds[eps] == labels, n_correct) | calibrated[eps]
            | {"adv_pred": adv_preds[eps].tolist(), "attack_seconds": seconds} | records for eps in eps_values}


def transfer_sweep(model: nn.Module, examples: dict[float, torch.Tensor], labels: torch.Tensor, clean_preds: torch.Tensor,
                   clean_probs: torch.Tensor, batch_size: int, device) -> dict[float, dict]:
    """A transfer attack's metrics at every eps: its ``examples`` (crafted on a surrogate, one per
    attacked image, robench.pipeline.transfer) answered by ``model``, as :func:`attack_sweep`'s rows
    are: an image the model gets wrong on clean keeps its clean answer, the others take the answer to
    their example; ECE and NLL of the answers after the attack."""
    correct = (clean_preds == labels).nonzero().flatten()
    started = time.perf_counter()
    found = {}
    with exact_arithmetic():
        for eps, adversarial in examples.items():
            preds, probs = clean_preds.clone(), clean_probs.clone()
            if len(correct):
                logits = logits_of(model, adversarial[correct], batch_size, device)
                preds[correct], probs[correct] = logits.argmax(1), torch.softmax(logits, dim=1)
            found[eps] = (preds, probs)
    seconds = time.perf_counter() - started
    return {eps: robust_metrics(labels, preds == labels, len(correct)) | calibration(probs, labels)
            | {"adv_pred": preds.tolist(), "attack_seconds": seconds} for eps, (preds, probs) in found.items()}


def _minimize(model, attack: MinimalAttack, x, y, chunk, eps_values, adv_preds) -> torch.Tensor:
    """Run a minimal attack on one batch; fill each eps's predictions from its examples; return eps*.

    At an eps the image keeps its clean (correct) prediction where eps* > eps and takes its
    example's prediction where eps* <= eps, so each eps's row says what that example does there.
    """
    adversarial, star = attack.minimize(model, x, y)
    check_perturbation(f"attack {attack.name}", attack.norm, adversarial, x, attack.eps_max)
    with torch.no_grad():
        preds = model(adversarial).argmax(1).cpu()
    star, y = star.float().cpu(), y.cpu()
    found = torch.isfinite(star)
    sizes = perturbation_size(adversarial - x, attack.norm).cpu()  # eps* is a radius in the attack's own norm
    if (preds[found] == y[found]).any() or (sizes[found] > star[found] + slack(star[found], attack.norm)).any():
        raise ValueError(f"attack {attack.name} reported an eps* whose example does not fool the model or is larger than eps*")
    for eps in eps_values:
        adv_preds[eps][chunk] = torch.where(star <= eps, preds, y)
    return star
