"""Benchmark 1: robench's training loop vs a bare PyTorch loop doing the same maths.

Same model (ViT-Ti/16 at 112x112, random init: weights do not change the cost), same batches,
same optimizer (timm AdamW), schedule, loss and one validation batch per epoch.
Prints throughput(robench) / throughput(bare); target >= 0.97.

    python bench/train_overhead.py
"""

from __future__ import annotations

import math

import torch
from _timing import interleaved, report
from timm.optim import create_optimizer_v2
from torch import nn

from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
from robench.pipeline.train import lr_lambda, to_pixels, train
from robench_plugins.strategies.full import Full

N_TRAIN, N_VAL, SIZE = 256, 32, 112
RECIPE = Full.recipe.override(epochs=1, warmup_epochs=1, augment=False, class_weighting="none")


def make_model():
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec("vit_tiny_patch16_224", SIZE, pretrained=False), 7)
    return Normalized(Full().adapt(vit), mean, std)


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8), torch.randint(0, 7, (n,), generator=g)


TRAIN, VAL = data(N_TRAIN, 0), data(N_VAL, 1)


def robench_loop():
    model = make_model()
    train(model, Full(), RECIPE, TRAIN, VAL, 7, seed=0, device=torch.device("cpu"))


def bare_loop():
    model = make_model()
    (x, y), (vx, _) = TRAIN, VAL
    optimizer = create_optimizer_v2(model, opt="adamw", lr=RECIPE.lr, weight_decay=RECIPE.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(RECIPE, math.ceil(N_TRAIN / RECIPE.batch_size)))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(0)
    for _ in range(RECIPE.epochs):
        model.train()
        for batch in torch.randperm(N_TRAIN, generator=generator).split(RECIPE.batch_size):
            loss = loss_fn(model(to_pixels(x[batch])), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            model(to_pixels(vx)).argmax(1)


if __name__ == "__main__":
    robench_s, bare_s = interleaved(robench_loop, bare_loop, repeats=5)
    ratio = bare_s / robench_s
    report("train throughput robench/bare", ratio, ">= 0.97", ratio >= 0.97,
           f"robench {N_TRAIN / robench_s:.1f} img/s, bare {N_TRAIN / bare_s:.1f} img/s (ViT-Ti/16 at {SIZE}, batch {RECIPE.batch_size})")
