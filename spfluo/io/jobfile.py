"""The job file (``job.json``): the whole contract between a protocol and its job.

Layout::

    {"step": "reconstruct",
     "inputs":  {"particles": "Runs/000012_.../extra/particles.csv", ...},
     "params":  {"method": "hessian", "iterations": 100, ...},
     "outputs": {"volume": "Runs/000034_.../extra/volume.ome.tif", ...},
     "device": "cpu", "threads": 2, "seed": 0}

Relative paths are relative to the working directory of the job (the project
folder when a protocol runs it).  A protocol writes the file with :func:`write_job`;
``python -m spfluo.jobs`` reads it with :func:`load_job`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spfluo.io.atomic import atomic_write_path

__all__ = ["Job", "JobError", "load_job", "write_job", "read_json_file"]

_REQUIRED = ("step", "inputs", "params", "outputs")


class JobError(Exception):
    """A job rejected its input or failed: the message is the one-line reason."""


@dataclass(frozen=True)
class Job:
    """A parsed job file."""

    step: str
    inputs: dict
    params: dict
    outputs: dict
    device: str = "cpu"
    threads: int = 1
    seed: int | None = None
    path: Path | None = field(default=None, compare=False)

    def input(self, name: str, *, required: bool = True) -> Path | None:
        """Path of input ``name``; a missing required input is a JobError."""
        value = self.inputs.get(name)
        if value in (None, ""):
            if required:
                raise JobError(f"job {self.step}: input '{name}' is missing from {self.path}")
            return None
        return Path(value)

    def existing_input(self, name: str, *, required: bool = True) -> Path | None:
        """Like :meth:`input`, and the file must exist."""
        p = self.input(name, required=required)
        if p is not None and not p.exists():
            raise JobError(f"job {self.step}: input '{name}' file {p} does not exist")
        return p

    def output(self, name: str) -> Path:
        value = self.outputs.get(name)
        if not value:
            raise JobError(f"job {self.step}: output '{name}' is missing from {self.path}")
        p = Path(value)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def param(self, name: str, default: Any = ...) -> Any:
        if name in self.params:
            return self.params[name]
        if default is ...:
            raise JobError(f"job {self.step}: parameter '{name}' is missing from {self.path}")
        return default


def read_json_file(path: str | os.PathLike, *, what: str) -> Any:
    """The JSON value in ``path``; a missing or invalid file is a JobError naming ``what``."""
    path = Path(path)
    if not path.exists():
        raise JobError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobError(f"{what} {path} is not valid JSON: {exc}") from exc


def load_job(path: str | os.PathLike) -> Job:
    """Read and check a job file."""
    path = Path(path)
    data = read_json_file(path, what="job file")
    if not isinstance(data, dict):
        raise JobError(f"job file {path} must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise JobError(f"job file {path} lacks {', '.join(missing)}")
    for key in ("inputs", "params", "outputs"):
        if not isinstance(data[key], dict):
            raise JobError(f"job file {path}: '{key}' must be an object")
    device = data.get("device", "cpu")
    if device not in ("cpu", "gpu"):
        raise JobError(f"job file {path}: device must be 'cpu' or 'gpu', got {device!r}")
    return Job(step=data["step"], inputs=data["inputs"], params=data["params"],
               outputs=data["outputs"], device=device, threads=int(data.get("threads", 1)),
               seed=data.get("seed"), path=path)


def write_job(path: str | os.PathLike, *, step: str, inputs: dict, params: dict, outputs: dict,
              device: str = "cpu", threads: int = 1, seed: int | None = None) -> Path:
    """Write a job file atomically; values must be JSON-serialisable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"step": step, "inputs": {k: (None if v is None else str(v)) for k, v in inputs.items()},
            "params": params, "outputs": {k: str(v) for k, v in outputs.items()},
            "device": device, "threads": int(threads), "seed": seed}
    text = json.dumps(data, indent=2, sort_keys=False, default=_json_default)
    with atomic_write_path(path) as tmp:
        tmp.write_text(text)
    return path


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} into a job file")
