"""Resuming a run: one writer per run folder, settings that must match, and the cells already done.

Running a command again on the same ``--out`` continues where it stopped: cells whose row is
there with status ok are not run again, failed cells are retried (their new row supersedes the
old one), and new strategies, defenses, attacks, eps or seeds extend the run. Settings that would make new
rows incomparable with the old ones (the data, the split, the test set, the backbone and its
weights, the image size, a strategy's recipe, the training and attack precision) must match, or the run refuses in one line before
anything trains.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout

from robench.attack import CLEAN, MINIMAL
from robench.core import results
from robench.core.comparable import first_difference, merge_configs, show
from robench.errors import RobenchError
from robench.pipeline import checkpoints, features, transfer

LOCK_FILE = ".robench.lock"


@contextmanager
def exclusive(out: Path, made: Path | None = None) -> Iterator[None]:
    """Hold ``<out>/.robench.lock`` for the whole run; refuse at once if another run holds it.

    The lock is an OS file lock: a killed run releases it with its process, so no stale lock
    is left behind to delete by hand. When a failure leaves ``out`` holding nothing but the lock,
    the folders this run made for it (``out`` up to ``made``) are removed: no empty run folder is
    left to puzzle over.
    """
    lock = FileLock(Path(out) / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RobenchError(
            f"another robench run holds {out} (lock {Path(out) / LOCK_FILE}): wait for it to finish or pass another --out"
        ) from None
    try:
        yield
    except BaseException:
        if made is not None:
            _remove_if_unused(Path(out), Path(made))
        raise
    finally:
        lock.release()


def _remove_if_unused(out: Path, made: Path) -> None:
    """Remove ``out``, and the folders above it up to ``made``, if ``out`` holds nothing but the lock."""
    if [p.name for p in out.iterdir()] != [LOCK_FILE]:
        return
    with suppress(OSError):  # a folder that is not empty stays (so do those above it); the run's error is what is raised
        (out / LOCK_FILE).unlink()
        for folder in [out, *out.parents]:
            folder.rmdir()
            if folder == made:
                break


def start(out: Path, new: dict) -> dict:
    """Prepare ``out`` for this run (call it holding the lock); return the config.json to write.

    Cuts a torn last line off the results, refuses a folder written by an incompatible robench
    or with settings that differ, and merges the old config with the new one: extendable lists
    become their union, and the command that wrote each part is kept.
    """
    out = Path(out)
    results.drop_torn_tail(out)
    for partial in [path for folder in (".", checkpoints.FOLDER, features.FOLDER, transfer.FOLDER) for path in (out / folder).glob(".*.partial")]:
        partial.unlink()  # left by a killed run; no other run writes here while we hold the lock
    if not results.read_rows(out):
        return new
    if not (out / results.CONFIG_FILE).exists():
        raise RobenchError(f"{out} holds results but no {results.CONFIG_FILE}, so they cannot be checked against this run: pass another --out")
    old = results.read_config(out)  # refused in one line naming the field if it is not what robench wrote
    _check_format(out, old)
    _check_comparable(out, old["comparable"], new["comparable"])
    return merge_configs(old, new)


def finished(rows: list[dict]) -> set[tuple]:
    """The cells whose latest row is ok and carries its per-image records: a resumed run does not run
    them again. A row without them (written by an older robench, or edited) is computed again, so
    that no published number lacks the records it is recomputed from."""
    return {cell(*results.cell_of(row)) for row in results.latest(rows)
            if row["status"] == "ok" and has_records(row)}


def has_records(row: dict) -> bool:
    """Whether a row carries a full list of per-image predictions (and eps* for a minimal attack)."""
    fields = ["clean_pred"] if row.get("attack") == CLEAN else ["adv_pred"]
    if row.get("attack_family") == MINIMAL:
        fields.append("min_eps")
    n = row.get("n_attacked")
    return all(isinstance(row.get(field), list) and len(row[field]) == n for field in fields)


def cell(strategy: str, seed: int, attack: str, eps: float) -> tuple:
    """A cell key with normalised types, comparable with :func:`finished`'s."""
    return (strategy, int(seed), attack, float(eps))


def _check_format(out: Path, old: dict) -> None:
    if old.get("format") != results.FORMAT or "comparable" not in old:
        raise RobenchError(
            f"{out} was written by robench {old.get('robench_version', 'unknown')} in results format "
            f"{old.get('format', 'unknown')}; this robench writes format {results.FORMAT} and cannot add to it: pass another --out"
        )


def _check_comparable(out: Path, old: dict, new: dict) -> None:
    found = first_difference(old, new)
    if not found:
        return
    kind, name, before, now = found
    if kind == "setting":
        raise RobenchError(
            f"{out} holds results with {name} {show(before)}, this command has {show(now)}: their rows would not be "
            f"comparable; use the same setting to resume or extend that run, or pass another --out"
        )
    if kind == "plugin":
        raise RobenchError(
            f"{out} holds results of {name} from {before}, this robench has {now}: "
            f"rows of two versions would be mixed; rerun with the old version, or pass another --out"
        )
    diff = ", ".join(f"{key} {before[key]} -> {now[key]}" for key in now)
    raise RobenchError(
        f"{out} holds results of strategy {name!r} trained with another recipe ({diff}; "
        f"set by --epochs/--lr/--batch-size or {name}:KEY=VALUE): use the same recipe or pass another --out"
    )
