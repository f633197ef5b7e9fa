"""How far a model's confidence can be trusted: expected calibration error and negative log-likelihood.

A model that stays accurate under attack (or corruption) but grows over-confident misleads a
clinician as much as one that is fooled; accuracy alone does not show it. Every clean and attacked
cell gets both numbers, from the softmax probabilities of the model's final answer on each image:
- ECE: top-label expected calibration error over 15 equal-width confidence bins (Guo et al. 2017,
  "On Calibration of Modern Neural Networks"), computed by torchmetrics;
- NLL: the mean of -log p(true class), natural log.
A model's clean row also keeps its reliability diagram (``reliability``): per confidence bin the
image count, the accuracy and the mean confidence, from which the page draws it and the ECE follows.
"""

from __future__ import annotations

import torch

BINS = 15  # Guo et al.'s and torchmetrics' usual count


def calibration(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """``{"ece", "nll"}`` of N x classes probabilities for N labels; None for both with no image."""
    if len(labels) == 0:
        return {"ece": None, "nll": None}
    from torchmetrics.functional.classification import multiclass_calibration_error

    probs, labels = probs.float().cpu(), labels.long().cpu()
    ece = multiclass_calibration_error(probs, labels, num_classes=probs.shape[1], n_bins=BINS, norm="l1")
    true = probs.gather(1, labels[:, None]).squeeze(1)
    return {"ece": float(ece), "nll": float(-torch.log(true.clamp_min(torch.finfo(torch.float32).tiny)).mean())}


def reliability(probs: torch.Tensor, labels: torch.Tensor) -> dict | None:
    """The reliability diagram of the answers: per equal-width bin of top-label confidence (lower edge
    excluded, as torchmetrics bins), the image count, accuracy and mean confidence (None where empty).
    Its count-weighted |accuracy - confidence| is the ECE. None with no image."""
    if len(labels) == 0:
        return None
    confidence, predicted = probs.float().cpu().max(1)
    correct = (predicted == labels.long().cpu()).float()
    bins = torch.clamp(torch.ceil(confidence * BINS).long() - 1, 0, BINS - 1)  # (k/B, (k+1)/B] -> k
    counts = torch.bincount(bins, minlength=BINS)

    def mean(values: torch.Tensor) -> list[float | None]:
        sums = torch.zeros(BINS).index_add_(0, bins, values)
        return [None if n == 0 else float(total / n) for total, n in zip(sums, counts)]

    return {"counts": counts.tolist(), "accuracy": mean(correct), "confidence": mean(confidence)}
