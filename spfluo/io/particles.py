"""Particle tables: how a job receives a particle set (files, ids and optional poses).

A particle table is a CSV with the columns ``id, path`` and, when the poses
are known, the stored-pose matrix columns ``m00..m23`` (``(x, y, z)`` order,
translations in micrometres; see :mod:`spfluo.io.poses`).  Other columns
(e.g. ``score``) pass through.  Relative paths are relative to the current
directory (the project folder when a protocol runs the job).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spfluo.io._csvtable import infer_column, parse_number, read_csv_table, write_csv_table
from spfluo.io.poses import EULER_COLUMNS, MATRIX_COLUMNS, read_poses_csv, write_poses_csv
from spfluo.io.volumes import read_shape, read_volume, read_voxel_size

__all__ = [
    "ParticleTable",
    "read_particle_table",
    "write_particle_table",
    "read_particle_stack",
    "iter_particle_batches",
    "particle_stack_info",
]


@dataclass(frozen=True, eq=False)
class ParticleTable:
    """Particles as listed in a table.

    Attributes
    ----------
    ids : ndarray, shape (N,), int64
    paths : ndarray, shape (N,), str
        Particle files.
    matrices : ndarray, shape (N, 4, 4) or None
        Stored poses (xyz, micrometres), None when the poses are not known.
    extra : dict of str to ndarray, shape (N,)
    """

    ids: np.ndarray
    paths: np.ndarray
    matrices: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.ids))

    @property
    def has_poses(self) -> bool:
        return self.matrices is not None


def write_particle_table(path: str | os.PathLike, ids: Sequence[int], paths: Sequence[str],
                         matrices: np.ndarray | None = None, *,
                         extra: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Write a particle table atomically (with pose columns when ``matrices`` is given)."""
    ids = np.asarray(ids, dtype=np.int64)
    paths = [str(p) for p in paths]
    if len(paths) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(paths)} paths: give one path per particle")
    if len(ids) == 0:
        raise ValueError("a particle table needs at least one particle")
    columns = {"path": paths, **{k: list(v) for k, v in (extra or {}).items()}}
    if matrices is not None:
        return write_poses_csv(path, ids, matrices, extra=columns)
    header = ["id", *columns]
    return write_csv_table(path, header, [ids, *columns.values()])


def read_particle_table(path: str | os.PathLike) -> ParticleTable:
    """Read a particle table; poses are present when its header has the pose columns."""
    table = read_csv_table(path, "particle table")
    header = set(table.header)
    if "path" not in header or "id" not in header:
        raise ValueError(f"{str(path)!r}: a particle table needs the columns 'id' and 'path', "
                         f"got {', '.join(table.header)}")
    if header.issuperset(MATRIX_COLUMNS) or header.issuperset(EULER_COLUMNS):
        poses = read_poses_csv(path)
        extra = dict(poses.extra)
        paths = np.asarray(extra.pop("path"), dtype=str)
        return ParticleTable(ids=poses.ids, paths=paths, matrices=poses.matrices, extra=extra)
    n = len(table.rows)
    if n == 0:
        raise ValueError(f"{str(path)!r} lists no particle")
    ids = np.array([parse_number(table, i, "id", integer=True) for i in range(n)], dtype=np.int64)
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{str(path)!r}: id {int(uniq[counts > 1][0])} repeats; ids must be unique")
    extra = {name: infer_column(table.column(name)) for name in table.header
             if name not in ("id", "path")}
    return ParticleTable(ids=ids, paths=np.asarray(table.column("path"), dtype=str), extra=extra)


def particle_stack_info(paths: Sequence[str]) -> tuple[tuple[int, int, int, int], tuple]:
    """Common shape ``(C, D, D, D)`` and voxel size of particle files (headers only).

    Raises ValueError naming the first file whose shape or voxel size differs.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("no particle files given")
    shape0 = tuple(read_shape(paths[0]))
    vs0 = read_voxel_size(paths[0])
    for p in paths[1:]:
        shape = tuple(read_shape(p))
        if shape != shape0:
            raise ValueError(f"particle {p} has shape {shape} but {paths[0]} has {shape0}: "
                             "every particle must have the same box and channels")
    return shape0, vs0


def read_particle_stack(paths: Sequence[str], *, voxel_size=None, dtype=np.float32) -> np.ndarray:
    """Load particle files into one array ``(N, C, D, D, D)`` (shapes must agree)."""
    shape, _ = particle_stack_info(paths)
    out = np.empty((len(paths),) + shape, dtype=dtype)
    for k, p in enumerate(paths):
        out[k] = read_volume(p, voxel_size=voxel_size or (1.0, 1.0, 1.0), dtype=dtype).data
    return out


def iter_particle_batches(paths: Sequence[str], batch_size: int, *,
                          dtype=np.float32) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(slice, stack)`` batches of at most ``batch_size`` particles, in order.

    Memory stays bounded by the batch whatever the number of particles.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = [str(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        stop = min(start + batch_size, len(paths))
        yield slice(start, stop), read_particle_stack(paths[start:stop], dtype=dtype)
