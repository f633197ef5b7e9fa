"""Shared fixtures: tiny models and data, and the location of the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robench.backbone import MICRO, BackboneSpec, Normalized, create_backbone

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never write to the user's cache directory."""
    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("ROBENCH_QUIET", "1")


@pytest.fixture
def micro_vit():
    """A randomly initialised 0.1M-parameter timm ViT at 32x32 with 7 classes, normalized inside."""
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    return vit, mean, std


@pytest.fixture
def micro_model(micro_vit):
    vit, mean, std = micro_vit
    return Normalized(vit, mean, std).eval()


def shared_or_skip(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real data and weights live in ../shared)")
    return path


def cpu_threads() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
