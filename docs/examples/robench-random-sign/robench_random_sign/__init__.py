"""Random-sign noise: a sanity floor, not an attack anyone should fear.

x' = clip_[0,1](x + eps * s), s drawn uniformly from {-1, +1} per pixel, `draws` times; an image
counts as broken if any draw fools the model. It spends the whole L-inf budget, like FGSM, but
in a random direction instead of the gradient's. Any gradient attack must do at least as well
at the same eps; if this one does better, the gradients are masked (Athalye, Carlini and
Wagner, ICML 2018; Carlini et al., arXiv:1902.06705, section 5).
"""

import torch

import robench
from robench.attack import Attack


class RandomSign(Attack):
    """Random-sign noise at the full eps, best of `draws` tries: a floor every attack must beat."""

    name = "random_sign"
    family = "single-step"
    norm = "Linf"  # every pixel moves by at most eps
    black_box = True  # uses no gradient: beating a white-box attack means masked gradients

    def __init__(self, draws: int = 1):
        if draws < 1:
            raise ValueError(f"draws must be >= 1, got {draws}")
        self.draws = draws

    @torch.no_grad()
    def perturb(self, model, images, labels, eps):
        adversarial, fooled = images, torch.zeros_like(labels, dtype=torch.bool)
        for _ in range(self.draws):
            signs = torch.randint(0, 2, images.shape, device=images.device) * 2 - 1
            candidate = (images + eps * signs).clamp(0, 1)
            keep = fooled.view(-1, 1, 1, 1)  # an image already fooled keeps its noise
            adversarial = torch.where(keep, adversarial, candidate)
            fooled |= model(adversarial).argmax(1) != labels
        return adversarial


@robench.hookimpl
def register_attacks(register):
    register(RandomSign)
