"""Work over several fields of view: one task per field, here or on a Dask cluster.

The ``pick`` and ``extract`` jobs run a function per field (the candidates and features
of a field; the boxes of a field).  Without a scheduler the fields run here, one after
the other, each reporting its progress; with ``params.scheduler`` (the address of a
running ``dask.distributed`` scheduler, as ``spfluo batch --scheduler`` takes) each field
is one task of that cluster, whose workers must see the same files.  The log gives the
fields done out of the total and the remaining time (:class:`FieldProgress`).
"""

from __future__ import annotations

import re
import time
from typing import Callable, Sequence

import numpy as np

from ..constants import DASK_ADDRESS
from .jobfile import Job, JobError, Progress

__all__ = ["FieldProgress", "scheduler_param", "run_fields"]


class FieldProgress:
    """Progress lines of work over several fields: fields done out of the total, the
    share of the field just reported, elapsed and remaining time.

    ``weights`` (one per field, e.g. its voxels) set each field's share of the work;
    ``update(k, fraction)`` reports field ``k`` (from 0) done to ``fraction`` (fields may
    complete in any order, on a cluster); a line is printed at most every ``every``
    seconds, and when a field completes.
    """

    def __init__(self, progress: Progress, names: Sequence[str], weights, *, every: float = 5.0):
        self.progress, self.names = progress, list(names)
        w = np.asarray(weights, dtype=np.float64)
        self.share = w / w.sum()
        self.fraction = np.zeros(len(w))
        self.every, self.last = float(every), -np.inf
        self.start = time.perf_counter()

    def update(self, k: int, fraction: float) -> None:
        now = time.perf_counter()
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.fraction[k] >= 1.0 or (fraction < 1.0 and now - self.last < self.every):
            return
        self.fraction[k], self.last = fraction, now
        done = float(self.share @ self.fraction)
        elapsed = now - self.start
        eta = f"~{elapsed * (1.0 - done) / done:.0f} s" if done > 0 else "unknown"
        self.progress.log(f"{int((self.fraction >= 1.0).sum())}/{len(self.names)} field(s) "
                          f"done; field {self.names[k]} {100 * fraction:.0f}% "
                          f"({100 * done:.0f}% of the work, elapsed {elapsed:.0f} s, "
                          f"remaining {eta})")


def scheduler_param(job: Job) -> str | None:
    """``params.scheduler``: None (run here) or a Dask scheduler address."""
    value = job.param("scheduler", None)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.fullmatch(DASK_ADDRESS, value):
        raise JobError(f"job {job.step}: scheduler must be the address of a Dask scheduler "
                       f"such as tcp://node:8786, got {value!r}")
    return value


def run_fields(function: Callable, tasks: Sequence[dict], fields: FieldProgress, *,
               scheduler: str | None = None) -> list:
    """``function(**task)`` for every field, results in the order of ``tasks``.

    Here, one field after the other, with ``progress=callback(done, total)`` for the
    progress lines; on the cluster at ``scheduler``, one task per field (their
    progress is counted when each completes).
    """
    results = [None] * len(tasks)
    if scheduler is None:
        for k, task in enumerate(tasks):
            results[k] = function(**task, progress=lambda done, total, k=k:
                                  fields.update(k, done / total))
            fields.update(k, 1.0)
        return results
    from dask.distributed import Client, as_completed

    fields.progress.log(f"{len(tasks)} field(s) sent to the Dask scheduler {scheduler}")
    with Client(scheduler, timeout="60s") as client:
        futures = {client.submit(function, **task, pure=False): k
                   for k, task in enumerate(tasks)}
        for future in as_completed(futures):
            k = futures[future]
            results[k] = future.result()
            fields.update(k, 1.0)
    return results
