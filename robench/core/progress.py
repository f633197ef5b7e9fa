"""How a run tells its user where it is: bars on a terminal, plain lines in a log, JSON for machines.

On a terminal (stderr a TTY) loops draw tqdm bars with their rate and ETA. Anywhere else (output
going to a file, a notebook, CI) a bar is noise, so while a run lasts robench writes plain lines to
stderr instead: what the run will do, a line as each model starts, and inside a model at most one
line every LINE_EVERY seconds, such as
``model 3/21 vpt_deep(prompts=5) seed 1: training, epoch 4/10, ETA 12 min``. Each model's result
and the run's summary go to stdout. The ETA is the whole run's: the rest of the current loop at its
measured pace, plus each model still to come at the mean time of the models finished so far (before
the first one finishes, at the pace of the current one). ``--log-json FILE`` appends the same
events to FILE, one JSON object per line, on a terminal or not. ``--quiet`` silences the bars and
lines, not the JSON file (nor failures, which the command prints anyway).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from robench.errors import RobenchError

_QUIET_ENV = "ROBENCH_QUIET"
LINE_EVERY = 30.0  # seconds: the most often a loop's progress is written to a log
TRAINING = "training"  # the phase of a model's training loop (robench.pipeline.train)
# How a model of the grid ended, as the summary counts it.
ENDINGS = {"trained": "trained", "loaded": "from checkpoints", "earlier": "finished earlier", "failed": "failed",
           "remote": "on Ray"}


def set_quiet(quiet: bool) -> None:
    os.environ[_QUIET_ENV] = "1" if quiet else ""


def quiet() -> bool:
    """No bars: --quiet, or stderr is not a terminal."""
    return silenced() or not sys.stderr.isatty()


def silenced() -> bool:
    """--quiet: no bars, no lines, not even the run's summary."""
    return bool(os.environ.get(_QUIET_ENV))


def progress(iterable: Iterable, *, phase: str | None = None, **kwargs) -> Iterable:
    """``tqdm(iterable)`` with rate and ETA on a terminal; while a run lasts, also its log lines and
    events, which name the loop ``phase`` (default: the bar's ``desc``)."""
    total = kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None)
    bar = tqdm(iterable, leave=False, dynamic_ncols=True, disable=quiet(), **kwargs)
    if _RUN is None:
        return bar
    return _RUN.loop(bar, phase or kwargs.get("desc", ""), kwargs.get("unit", "it"), total)


def say(message: str) -> None:
    """One line for the user, unless --quiet."""
    if not silenced():
        print(message, flush=True)


@dataclass
class Model:
    """The model of the grid that is working: its place, what it is, when it started."""

    name: str  # "model 3/21 vpt_deep(prompts=5) seed 1"
    fields: dict
    started: float
    live: bool  # it works while the driver reads its rows (here), not elsewhere (on Ray)
    trained: bool = False


@dataclass
class RunLog:
    """The story of one run as it happens: lines on stderr (off a terminal) or stdout, and JSON events."""

    file: object | None = None  # the --log-json file
    started: float = field(default_factory=lambda: time.monotonic())
    last: float = field(default_factory=lambda: time.monotonic())  # when the last progress went out
    models: int = 0
    index: int = 0
    current: Model | None = None
    worked: list[float] = field(default_factory=list)  # seconds of the models trained or loaded so far
    endings: Counter = field(default_factory=Counter)

    def start(self, strategies: int, seeds: int, attacks: int, eps: int, threads: int, out: Path) -> None:
        """What the run will do, before its first model."""
        self.models = strategies * seeds
        line = (f"run: {self.models} models ({_count(strategies, 'strategy', 'strategies')} x {_count(seeds, 'seed')}), "
                f"each attacked by {_count(attacks, 'attack')} x {_count(eps, 'eps', 'eps')}; "
                f"{_count(threads, 'torch thread')} (--threads N to change); results in {out}")
        self._emit("run_start", line, "note", models=self.models, strategies=strategies, seeds=seeds, attacks=attacks,
                   eps=eps, threads=threads, out=str(out))

    def model(self, label: str, seed: int, live: bool = True) -> Model:
        """The next (strategy, seed) model of the grid starts (is said to, when ``live``: working here
        while its rows are read, rather than finished elsewhere already); ended by model_done."""
        self.index += 1
        fields = {"model": self.index, "models": self.models, "strategy": label, "seed": seed}
        model = Model(f"model {self.index}/{self.models} {label} seed {seed}", fields, time.monotonic(), live)
        if live:
            self.current = model
            self._emit("model_start", f"{model.name}: start", "note", **fields)
        return model

    def model_done(self, model: Model, summary: str, fresh: list[dict]) -> None:
        """The model's result line; ``fresh``: the rows it wrote in this run."""
        self.current = None
        seconds = time.monotonic() - model.started
        failed = sum(row["status"] != "ok" for row in fresh)
        if not fresh:
            ending, note = "earlier", " (finished earlier)"
        elif failed == len(fresh):
            ending, note = "failed", ""
        elif not model.live:
            ending, note = "remote", ""
        else:
            ending = "trained" if model.trained else "loaded"
            note = f" ({'trained' if model.trained else 'loaded from its checkpoint'}, {duration(seconds)})"
        if ending in ("trained", "loaded"):
            self.worked.append(seconds)
        self.endings[ending] += 1
        self._emit("model_end", f"model {self.index}/{self.models} {summary}{note}", "result", **model.fields,
                   ending=ending, seconds=round(seconds, 3), cells_ok=len(fresh) - failed, cells_failed=failed)

    def finish(self, leaderboard: Path, rows: list[dict]) -> None:
        """The run's summary: its models, its cells (all of the run folder's), its time and its page."""
        seconds = time.monotonic() - self.started
        ok = sum(row["status"] == "ok" for row in rows)
        endings = ", ".join(f"{n} {ENDINGS[e]}" for e, n in self.endings.items())
        self._emit("run_end", f"done in {duration(seconds)}: {self.index} models ({endings}), {ok} cells ok, "
                   f"{len(rows) - ok} failed; leaderboard: {shown(leaderboard)}", "result", status="done",
                   seconds=round(seconds, 3), models=self.index, endings=dict(self.endings), cells_ok=ok,
                   cells_failed=len(rows) - ok, leaderboard=str(leaderboard))

    def loop(self, items: Iterable, phase: str, unit: str, total: int | None) -> Iterator:
        """``items``, with a progress line (and event) after a step when LINE_EVERY seconds have passed."""
        model, started = self.current, time.monotonic()
        if model is not None and phase == TRAINING:
            model.trained = True
        for done, item in enumerate(items, start=1):
            yield item
            now = time.monotonic()
            if now - self.last < LINE_EVERY:
                continue
            left = (now - started) / done * (total - done) if total else None
            eta = self._eta(left, now)
            count = f"{unit} {done}/{total}" if total else f"{unit} {done}"
            line = f"{model.name}: {phase}, {count}" if model else f"{phase}: {count}"
            self._emit("progress", line + (f", ETA {duration(eta)}" if eta is not None else ""), "step",
                       **(model.fields if model else {}), phase=phase, unit=unit, done=done, total=total,
                       eta_s=None if eta is None else round(eta))

    def _eta(self, left: float | None, now: float) -> float | None:
        model = self.current
        if left is None or model is None:
            return left
        per_model = sum(self.worked) / len(self.worked) if self.worked else now - model.started + left
        return left + (self.models - self.index) * per_model

    def _emit(self, event: str, line: str | None, kind: str, **fields) -> None:
        """Write an event to the JSON file, and its line: a ``result`` to stdout, a ``note`` to stderr, a
        ``step`` to stderr off a terminal (a bar shows it there); none with --quiet or without a line."""
        now = time.monotonic()
        if self.file is not None:
            stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record = {"event": event, "time": stamp, "elapsed_s": round(now - self.started, 3), **fields}
            record |= {"line": line} if line else {}
            self.file.write(json.dumps(record, default=str) + "\n")
            self.file.flush()
        self.last = now
        if line is None or silenced() or (kind == "step" and sys.stderr.isatty()):
            return
        print(line, file=sys.stdout if kind == "result" else sys.stderr, flush=True)


def shown(path: Path) -> Path:
    """``path`` as the user mostly typed it: relative to the working directory when inside it."""
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


_RUN: RunLog | None = None  # the run that is going on in this process, whose loops report to it


@contextmanager
def run_log(json_path: Path | None = None) -> Iterator[RunLog]:
    """Tell the story of a run while the block lasts; with ``json_path``, also as JSON events appended there."""
    global _RUN
    log, previous = RunLog(file=_open(json_path) if json_path is not None else None), _RUN
    _RUN = log
    try:
        yield log
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        log._emit("run_end", None, "event", status=status, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    finally:
        _RUN = previous
        if log.file is not None:
            log.file.close()


def _open(path: Path):
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a", encoding="utf-8")
    except OSError as exc:
        raise RobenchError(f"cannot write --log-json {path} ({exc.strerror or exc}): pass a file in a writable folder") from None


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``2 h 05 min``: as precise as a person reading a log needs."""
    seconds = round(seconds)
    if seconds < 100:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 100 else f"{minutes // 60} h {minutes % 60:02d} min"
