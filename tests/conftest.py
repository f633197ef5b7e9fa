"""Shared fixtures: tiny models and data, and the location of the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
from robench_plugins.backbones.timm import MICRO
from tests.battery import copied, finished_run, place  # noqa: F401  (the hostile battery's fixtures, see there)

# Under pytest-xdist (pyproject's addopts: two workers for two cores) each worker computes on one
# thread, and so do the robench processes tests start: two torch threads per process on shared
# cores run several times slower than one.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

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


def pytest_addoption(parser, pluginmanager):
    parser.addoption("--strict-skips", action="store_true",
                     help="a real-data test (marker integration, ../shared) or the browser test (tests/test_site.py) "
                          "that skips fails instead: CI (.ci/run) has both, so such a skip is a broken setup")
    if pluginmanager.is_blocked("xdist"):  # pyproject's addopts say -n 2; `-p no:xdist` runs one process
        # (declared as pytest-xdist declares it: lowercase short options are reserved to plugins)
        parser.getgroup("xdist")._addoption("-n", dest="numprocesses", help="ignored without pytest-xdist (-p no:xdist)")


def must_run(item: pytest.Item) -> bool:
    """Skipped in CI only by a broken setup: the real-data tests, the browser test, the MLflow test
    (.ci/run installs MLflow) and the corruption tests (.ci/run installs ImageMagick), not a CUDA one."""
    cuda_only = any("CUDA" in str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif"))
    return (item.get_closest_marker("integration") is not None
            or item.path.name in ("test_site.py", "test_mlflow_tracking.py", "test_corruptions.py")) and not cuda_only


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and item.config.getoption("strict_skips") and must_run(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"--strict-skips: {item.nodeid} must run here, but it skipped: {reason}"
    return report


def shared_or_skip(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the real data and weights live in ../shared)")
    return path


def cpu_threads() -> None:
    torch.set_num_threads(1 if WORKER else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def trained():
    """The micro ViT trained a few epochs on the synthetic set, with its test images in [0, 1].

    A random model's logits are nearly flat, so any attack fools it; a trained one separates
    attacks that work from attacks that only look like they do.
    """
    from robench import data
    from robench.pipeline.models import BackboneSpec, Normalized, create_backbone
    from robench.pipeline.prepare import resolve_dataset
    from robench.pipeline.train import to_pixels, train
    from robench.strategy import Recipe
    from robench_plugins.backbones.timm import MICRO
    from robench_plugins.strategies.full import Full

    images = resolve_dataset("synthetic").load(None, image_size=32)
    split = data.split(images, seed=0)
    torch.manual_seed(0)
    vit, mean, std = create_backbone(BackboneSpec(MICRO, 32, pretrained=False), num_classes=7)
    model = Normalized(Full().adapt(vit), mean, std)
    recipe = Recipe(epochs=6, lr=3e-3, batch_size=32, warmup_epochs=1)
    train(model, Full(), recipe, (images.images[split.train], images.labels[split.train]),
          (images.images[split.val], images.labels[split.val]), 7, 0, torch.device("cpu"))
    model.eval().requires_grad_(False)
    x, y = to_pixels(images.images[split.test]), images.labels[split.test]
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.7, "the fixture model should have learned"
    return model, x, y
