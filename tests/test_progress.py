"""Progress bars with rate and ETA on a terminal; off a terminal, plain lines while a run lasts; JSON events; --quiet."""

from __future__ import annotations

import io
import json
import re
import sys

import pytest
import torch

from robench.core import progress as progress_module
from robench.core.progress import TRAINING, progress, say
from robench.data.images import load_images
from robench.pipeline.models import Normalized
from robench.pipeline.train import frozen_features


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


class Clock:
    """time.monotonic for robench.core.progress, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_run_log_tells_models_steps_eta_and_summary(monkeypatch, capsys, tmp_path):
    clock = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    monkeypatch.setenv("ROBENCH_QUIET", "")  # pytest's stderr is not a terminal: plain lines
    with progress_module.run_log(tmp_path / "events.jsonl") as log:
        log.start(2, 1, 1, 2, 1, tmp_path)
        model = log.model("full", 0)
        for _ in progress(range(4), desc="train full seed 0", unit="epoch", phase=TRAINING):
            clock.now += 20  # an epoch takes 20 s: a line at most every LINE_EVERY = 30 s, so every other epoch
        log.model_done(model, "full seed 0: clean acc 70.0%", [{"status": "ok"}] * 3)
        model = log.model("linear_probe", 0)
        clock.now += 5  # no training loop: its checkpoint was loaded
        log.model_done(model, "linear_probe seed 0: clean acc 50.0%", [{"status": "ok"}, {"status": "failed"}])
        log.finish(tmp_path / "page.md", [{"status": "ok"}] * 4 + [{"status": "failed"}])
    out, err = capsys.readouterr()
    # After 2 of 4 epochs, 40 s: 40 s left of this model, and the other model at this one's pace (80 s).
    assert err.splitlines() == [
        f"run: 2 models (2 strategies x 1 seed), each attacked by 1 attack x 2 eps; 1 torch thread (--threads N to change); results in {tmp_path}",
        "model 1/2 full seed 0: start",
        "model 1/2 full seed 0: training, epoch 2/4, ETA 2 min",
        "model 1/2 full seed 0: training, epoch 4/4, ETA 80 s",
        "model 2/2 linear_probe seed 0: start",
    ]
    assert out.splitlines() == [
        "model 1/2 full seed 0: clean acc 70.0% (trained, 80 s)",
        "model 2/2 linear_probe seed 0: clean acc 50.0% (loaded from its checkpoint, 5 s)",
        f"done in 85 s: 2 models (1 trained, 1 from checkpoints), 4 cells ok, 1 failed; leaderboard: {tmp_path / 'page.md'}",
    ]
    found = events(tmp_path / "events.jsonl")
    assert [e["event"] for e in found] == ["run_start", "model_start", "progress", "progress", "model_end", "model_start",
                                           "model_end", "run_end"]
    assert [e["eta_s"] for e in found if e["event"] == "progress"] == [120, 80]
    assert found[4] | {"time": None} == {"event": "model_end", "time": None, "elapsed_s": 80.0, "model": 1, "models": 2,
                                         "strategy": "full", "seed": 0, "ending": "trained", "seconds": 80.0,
                                         "cells_ok": 3, "cells_failed": 0, "line": out.splitlines()[0]}
    assert found[-1]["endings"] == {"trained": 1, "loaded": 1} and found[-1]["cells_failed"] == 1


def test_quiet_and_terminal_keep_the_json_and_drop_lines(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(progress_module, "LINE_EVERY", 0.0)
    with progress_module.run_log(tmp_path / "quiet.jsonl") as log:  # ROBENCH_QUIET=1 (conftest): --quiet
        log.start(1, 1, 0, 1, 1, tmp_path)
        model = log.model("full", 0)
        list(progress(range(2), desc="train", unit="epoch", phase=TRAINING))
        log.model_done(model, "full seed 0: clean acc 70.0%", [{"status": "ok"}])
    assert capsys.readouterr() == ("", "")
    assert [e["event"] for e in events(tmp_path / "quiet.jsonl")] == ["run_start", "model_start", "progress", "progress", "model_end"]

    terminal = on_terminal(monkeypatch)  # a bar shows the steps; the model's start is still said
    with progress_module.run_log() as log:
        log.start(1, 1, 0, 1, 1, tmp_path)
        log.model("full", 0)
        list(progress(range(2), desc="train", unit="epoch", phase=TRAINING))
    lines = [line for line in terminal.getvalue().splitlines() if line.startswith(("run:", "model"))]
    assert lines[1:] == ["model 1/1 full seed 0: start"] and "epoch 1/2" not in terminal.getvalue()


def test_models_finished_elsewhere_or_earlier_and_an_interrupted_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ROBENCH_QUIET", "")
    with pytest.raises(KeyboardInterrupt), progress_module.run_log(tmp_path / "e.jsonl") as log:
        log.start(1, 2, 1, 1, 1, tmp_path)
        log.model_done(log.model("full", 0, live=False), "full seed 0: clean acc 70.0%", [{"status": "ok"}])  # on Ray
        log.model_done(log.model("full", 1), "full seed 1: clean acc 60.0%", [])  # every cell done by an earlier run
        raise KeyboardInterrupt
    out, err = capsys.readouterr()
    assert out.splitlines() == ["model 1/2 full seed 0: clean acc 70.0%", "model 2/2 full seed 1: clean acc 60.0% (finished earlier)"]
    assert "model 1/2 full seed 0: start" not in err and "model 2/2 full seed 1: start" in err
    found = events(tmp_path / "e.jsonl")
    assert [e.get("ending") for e in found if e["event"] == "model_end"] == ["remote", "earlier"]
    assert found[-1]["event"] == "run_end" and found[-1]["status"] == "interrupted"


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_synthetic_run_talks_in_its_log(monkeypatch, capsys, tmp_path):
    """The command with output going to a file: plain lines, the JSON events, the threads recorded."""
    from robench.cli import main

    monkeypatch.setenv("ROBENCH_QUIET", "")
    monkeypatch.setattr(progress_module, "LINE_EVERY", 0.0)  # every step: a real run waits 30 s between lines
    monkeypatch.setattr("robench.report.plots.write_plots", lambda *args, **kwargs: [])  # 1 s of PNGs this test does not read
    monkeypatch.chdir(tmp_path)  # the page is then named as typed: relative to where the command ran
    code = main(["run", "--dataset", "synthetic", "--epochs", "2", "--strategies", "linear_probe", "--attacks", "fgsm",
                 "--eps", "0.01", "--seeds", "0,1", "--threads", "1", "--out", str(tmp_path / "run"),
                 "--log-json", str(tmp_path / "log.jsonl")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "run: 2 models (1 strategy x 2 seeds), each attacked by 1 attack x 1 eps; 1 torch thread" in err
    for seed, index in ((0, 1), (1, 2)):
        who = f"model {index}/2 linear_probe seed {seed}"
        assert f"{who}: start" in err.splitlines()
        assert re.search(rf"^{who}: training, epoch 2/2, ETA \d+ s$", err, flags=re.MULTILINE)
        assert re.search(rf"^{who}: attack fgsm, batch \d+/\d+, ETA \d+ s$", err, flags=re.MULTILINE)
        assert re.search(rf"^{who}: clean acc .* \(trained, \d+ s\)$", out, flags=re.MULTILINE)
    assert re.search(r"^done in \d+ s: 2 models \(2 trained\), 6 cells ok, 0 failed; leaderboard: run/leaderboard.md$", out,
                     flags=re.MULTILINE)
    assert out.count("leaderboard: ") == 1  # the summary names the page; the command does not repeat it
    found = events(tmp_path / "log.jsonl")
    assert found[0]["event"] == "run_start" and found[0]["threads"] == 1
    assert found[-1]["event"] == "run_end" and found[-1]["cells_ok"] == 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["execution"]["threads"] == 1
