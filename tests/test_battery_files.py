"""Issue 24, family 4: no symbolic link in a run or site folder leads a write outside it, a named pipe
never hangs a reader, and an empty folder name in a TOML never means the current folder."""

from __future__ import annotations

import os
import threading

import pytest

from robench.cli import main
from tests.test_cli import FAST

RUN = ["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--escalation", "off", "--quiet"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["results.jsonl", "checkpoints", "features", "config.json"])
def test_a_linked_file_or_folder_in_out_is_refused_and_the_outside_is_untouched(tmp_path, capsys, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / name
    if name in ("checkpoints", "features"):
        target.mkdir()
    else:
        target.write_text("precious line 1\nprecious line 2")  # no newline at the end: a torn tail to cut
    out = tmp_path / "run"
    out.mkdir()
    (out / name).symlink_to(target)
    before = {p: (p.read_bytes() if p.is_file() else None) for p in outside.rglob("*")}
    assert main([*RUN, "--out", str(out)]) == 2
    assert "is a symbolic link" in one_line(capsys)
    assert {p: (p.read_bytes() if p.is_file() else None) for p in outside.rglob("*")} == before


def test_a_named_pipe_as_results_file_is_one_line_not_a_hang(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    (out / "results.jsonl").unlink()
    os.mkfifo(out / "results.jsonl")
    code = []
    reader = threading.Thread(target=lambda: code.append(main(["leaderboard", str(out), "--leaderboard-dir", str(tmp_path)])))
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # unblock the reader before failing
        with open(out / "results.jsonl", "w"):
            pass
        pytest.fail("robench leaderboard hung on a named pipe")
    assert code == [2] and "not a regular file" in one_line(capsys)


def test_a_linked_plots_folder_in_a_site_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "plots").symlink_to(tmp_path / "elsewhere")
    assert main(["site", str(out), "--to", str(tmp_path / "www")]) == 2
    assert "is a symbolic link" in one_line(capsys)
    assert not any((tmp_path / "elsewhere").iterdir())


def test_an_empty_out_in_a_toml_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text('dataset = "synthetic"\nstrategies = ["linear_probe"]\nout = ""\n')
    assert main(["run", "--config", str(tmp_path / "run.toml")]) == 2
    assert "is empty: name a folder" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]
