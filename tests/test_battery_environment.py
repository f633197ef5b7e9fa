"""Issue 24, family 10 and the command line's own streams: an ASCII-only stdout, a file size limit and
a reader that leaves the pipe early each give one clear outcome, never a traceback."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from robench.cli import main
from tests.test_cli import FAST


def robench(*argv, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robench", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_non_ascii_path_on_an_ascii_only_stdout_is_shown_escaped(tmp_path):
    out = tmp_path / "r\u00e9sultats"
    done = robench("run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--escalation",
                   "off", "--out", str(out), env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "r\\xe9sultats" in done.stdout + done.stderr and (out / "results.jsonl").is_file()


def test_a_file_size_limit_names_the_file_it_stopped(tmp_path):
    out = tmp_path / "run"
    assert main(["run", *FAST, "--strategies", "linear_probe", "--attacks", "fgsm", "--eps", "0.01", "--escalation",
                 "off", "--quiet", "--out", str(out)]) == 0

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    done = robench("leaderboard", str(out), "--leaderboard-dir", str(tmp_path / "boards"), preexec_fn=limited)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "File too large (" + str(out) in done.stderr and "ulimit -f" in done.stderr


@pytest.mark.slow  # default pytest under 4 min on 2 cores; CI runs it with -m slow
def test_a_reader_that_leaves_early_is_no_error():
    reader = subprocess.Popen([sys.executable, "-m", "robench", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.readline()
    reader.stdout.close()  # as `robench list | head -1` does
    assert reader.wait(timeout=300) == 0
    assert reader.stderr.read() == b""
