"""Write a file so that a kill, a crash or a full disk leaves the old file or the new one, never half.

The caller writes a temporary file beside the target; it is fsynced and renamed onto the target
only when writing succeeded, and removed whatever happened otherwise. A reader therefore never
sees a partial file under the target's name, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``target`` to write; renamed onto ``target`` on success.

    Raises the OSError of a write that failed (disk full, read-only folder) after removing the
    temporary file, so the caller decides whether the failure matters.
    """
    target = Path(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        with open(partial, "rb") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        partial.chmod(0o644)
        os.replace(partial, target)
    except OSError as exc:
        if exc.filename is None:  # a write refused mid-file (disk full, `ulimit -f`) names no file: name the target
            raise type(exc)(exc.errno, exc.strerror or str(exc), str(target)) from None
        raise
    finally:
        partial.unlink(missing_ok=True)
