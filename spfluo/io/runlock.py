"""The lock a worker holds on its run folder, so that two workers never share one.

A job (``python -m spfluo.jobs STEP job.json``) holds an exclusive ``flock`` on the
file :data:`~spfluo.constants.WORKER_LOCK` beside its job file for as long as it runs;
the lock file records its process id.  The kernel releases the lock when the process
ends, however it ends (kill -9 included), so a stale lock cannot outlive its worker.
A second worker of the same run folder is refused (:class:`LockHeld`), and a protocol
refuses to continue a run whose lock is held (:func:`lock_holder`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockHeld", "hold_lock", "lock_holder"]


class LockHeld(RuntimeError):
    """The lock is held by another process (``pid``, None when it wrote none)."""

    def __init__(self, path: Path, pid: int | None):
        self.path, self.pid = path, pid
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{who} holds the lock {path}")


def _read_pid(fh) -> int | None:
    fh.seek(0)
    text = fh.read().strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def hold_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the exclusive lock ``path`` (created) for the block; LockHeld if it is taken."""
    path = Path(path)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _read_pid(fh)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield path
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_holder(path: str | os.PathLike) -> int | None:
    """Process id of the holder of the lock ``path``; None when nobody holds it.

    A held lock whose holder wrote no id gives -1.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with hold_lock(path):
            return None
    except LockHeld as exc:
        return exc.pid if exc.pid is not None else -1
