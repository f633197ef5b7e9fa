"""Progress bars with rate and ETA on a terminal, silence when piped or with --quiet."""

from __future__ import annotations

import io
import sys

import torch

from robench.data.images import load_images
from robench.models import Normalized
from robench.progress import progress, say
from robench.train import frozen_features


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def on_terminal(monkeypatch) -> Terminal:
    """stderr is a terminal and --quiet was not given (call it in the test: pytest's capture
    resets sys.stderr between a fixture's setup and the test)."""
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("ROBENCH_QUIET", "")
    return screen


def test_a_bar_shows_count_rate_and_eta_on_a_terminal(monkeypatch):
    terminal = on_terminal(monkeypatch)
    assert list(progress(range(3), desc="train full seed 0", unit="epoch")) == [0, 1, 2]
    # The bar is drawn at the start ("?" until a rate is known) and erased when done (leave=False).
    assert "train full seed 0:   0%|          | 0/3 [00:00<?, ?epoch/s]" in terminal.getvalue()


def test_no_bar_when_stderr_is_not_a_terminal_or_with_quiet(monkeypatch, capsys):
    monkeypatch.setenv("ROBENCH_QUIET", "")
    assert list(progress(range(3), desc="piped")) == [0, 1, 2]  # pytest's stderr is not a terminal
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setenv("ROBENCH_QUIET", "1")
    assert list(progress(range(3), desc="quiet")) == [0, 1, 2]
    assert sys.stderr.getvalue() == "" and capsys.readouterr().err == ""


def test_say_prints_one_line_unless_quiet(monkeypatch, capsys):
    monkeypatch.setenv("ROBENCH_QUIET", "")
    say("full seed 0: clean acc 70.0%")
    monkeypatch.setenv("ROBENCH_QUIET", "1")
    say("not shown")
    assert capsys.readouterr().out == "full seed 0: clean acc 70.0%\n"


def test_decoding_and_feature_extraction_show_progress(tmp_path, monkeypatch, micro_vit):
    from PIL import Image

    terminal = on_terminal(monkeypatch)
    monkeypatch.setenv("ROBENCH_CACHE_DIR", str(tmp_path / "cache"))
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.jpg")
        Image.new("RGB", (20, 15), (index * 80, 10, 10)).save(paths[-1])
    assert load_images(paths, 8).shape == (3, 3, 8, 8)
    assert "decode images:   0%|          | 0/3 " in terminal.getvalue()

    vit, mean, std = micro_vit
    features = frozen_features(Normalized(vit, mean, std), torch.zeros(5, 3, 32, 32, dtype=torch.uint8), 2, "cpu")
    assert features.shape == (5, vit.embed_dim)
    assert "features:   0%|          | 0/3 " in terminal.getvalue()  # 5 images in batches of 2
