"""Progress lines of a job; the job file itself is :mod:`spfluo.io.jobfile`.

``Job``, ``JobError``, ``load_job``, ``write_job`` and ``read_json_file`` are re-exported
here for the job modules.
"""

from __future__ import annotations

import sys
import time

from ..io.jobfile import Job, JobError, load_job, read_json_file, write_job

__all__ = ["Job", "JobError", "Progress", "load_job", "write_job", "read_json_file"]


class Progress:
    """Progress lines on stdout (they land in the run log), flushed at once.

    ``step(i, n, **metrics)`` prints ``[i/n] k=v ... elapsed 12.3 s, remaining ~45 s``.
    The last line any Progress printed is kept in :attr:`last_line` (the stage a failed job
    reached, in its error file).
    """

    #: The last line printed by any Progress of this process (None before the first).
    last_line: str | None = None

    def __init__(self, name: str, *, stream=None):
        self.name = name
        self.start = time.perf_counter()
        self.stream = stream or sys.stdout

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str) -> None:
        Progress.last_line = f"[{self.name} {self.elapsed:.1f} s] {message}"
        print(f"[{self.name} {self.elapsed:7.1f} s] {message}", file=self.stream, flush=True)

    def step(self, i: int, n: int, **metrics) -> None:
        done = max(i, 1)
        remaining = self.elapsed / done * max(n - i, 0)
        parts = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        self.log(f"{i}/{n} {parts} (remaining ~{remaining:.0f} s)")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
