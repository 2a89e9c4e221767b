"""The resumable state of a long job (ab initio, refine): the optional ``checkpoint`` output.

A checkpoint is a NumPy ``.npz`` holding the arrays of an algorithm's state
(``state.to_arrays()``, read back with ``StateClass.from_arrays``) and ``digest``, a
fingerprint of everything the result depends on.  A job resumes only from a checkpoint
with its own digest; it removes the checkpoint once its outputs are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import numpy as np

from ..io import ParticleTable, atomic_write_path
from .jobfile import Job, Progress

__all__ = ["input_digest", "checkpoint_path", "load_checkpoint", "save_checkpoint",
           "remove_checkpoint"]


def input_digest(job: Job, table: ParticleTable, paths, *, version: int, **extra) -> str:
    """SHA-1 of the job's parameters, seed, device, particles (ids, files, their mtimes),
    ``version`` (of the checkpoint layout) and ``extra`` (JSON-able, e.g. other inputs)."""
    content = {"params": job.params, "seed": job.seed, "device": job.device,
               "ids": table.ids.tolist(), "paths": list(paths),
               "mtimes": [os.path.getmtime(p) for p in paths], **extra, "version": version}
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def checkpoint_path(job: Job) -> str | None:
    """Path of output ``checkpoint`` (its folder created), or None when the job has none."""
    path = job.outputs.get("checkpoint")
    if not path:
        return None
    job.output("checkpoint")
    return path


def load_checkpoint(path, digest: str, progress: Progress, *, state_class,
                    resumed: Callable[[object], str]):
    """The state saved at ``path`` (read with ``state_class.from_arrays``) if its digest is
    ``digest``.

    Returns None (and logs why) when there is no checkpoint, when it is from other inputs or
    parameters, or when it is unreadable; ``resumed(state)`` is the line logged on resuming.
    """
    if path is None or not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if str(arrays.pop("digest", "")) != digest:
            progress.log(f"checkpoint {path} is from other inputs or parameters: starting anew")
            return None
        state = state_class.from_arrays(arrays)
    except (OSError, ValueError, KeyError) as exc:
        progress.log(f"checkpoint {path} is unreadable ({exc}): starting anew")
        return None
    progress.log(resumed(state))
    return state


def save_checkpoint(path, state, digest: str) -> None:
    """Write ``state.to_arrays()`` and ``digest`` to ``path`` (``.npz``) atomically."""
    arrays = state.to_arrays()
    arrays["digest"] = np.asarray(digest)
    with atomic_write_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def remove_checkpoint(job: Job) -> None:
    """Delete the checkpoint of ``job``, if any (once its outputs are written)."""
    path = job.outputs.get("checkpoint")
    if path and os.path.exists(path):
        os.remove(path)
