"""Particle coordinates: CSV on disk, :class:`CoordinateTable` in memory.

A coordinate is the position of a particle centre in one image (a field of view), in
micrometres from the image origin: the centre of voxel ``(k, j, i)`` of an image of voxel
size ``(dz, dy, dx)`` is at ``(z, y, x) = (k dz, j dy, i dx)``. Coordinates are therefore
never negative.

On disk (CSV, one header line, one particle per line)::

    image_id,x,y,z[,score][,box_size_um][,particle_id]

with ``x, y, z`` in micrometres, in that (physical) order, as other tools write them. In
memory the positions are an ``(N, 3)`` array in ``(z, y, x)`` order, matching the array
axes: ``positions_zyx_um[:, ::-1]`` is the ``x, y, z`` of the file. Other columns are
ignored by the reader. Blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spfluo.io._csvtable import infer_column, parse_number, read_csv_table, write_csv_table

__all__ = ["CoordinateTable", "read_coordinates_csv", "write_coordinates_csv"]

_REQUIRED = ("image_id", "x", "y", "z")
_OPTIONAL = ("score", "box_size_um", "particle_id")


def _optional_float(values: Any, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"CoordinateTable.{name} must have shape ({n},), one value per "
                         f"particle, got {array.shape}")
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise ValueError(f"CoordinateTable.{name} is NaN or infinite at row {int(bad[0])}; give "
                         "finite values or leave the column out")
    return array


@dataclass(frozen=True, eq=False)
class CoordinateTable:
    """Particle positions in a set of images.

    Attributes
    ----------
    image_ids : ndarray, shape (N,), int64 or str
        Image (field of view) that each particle lies in.
    positions_zyx_um : ndarray, shape (N, 3), float64
        Particle centres ``(z, y, x)`` in micrometres from the image origin (>= 0).
    score : ndarray, shape (N,), float64, or None
        Detection score (larger is more confident).
    box_size_um : ndarray, shape (N,), float64, or None
        Edge of the box to extract around each particle, micrometres (> 0).
    particle_id : ndarray, shape (N,), int64, or None
        Unique particle identifiers.
    """

    image_ids: np.ndarray
    positions_zyx_um: np.ndarray
    score: np.ndarray | None = None
    box_size_um: np.ndarray | None = None
    particle_id: np.ndarray | None = None

    def __post_init__(self):
        image_ids = np.asarray(self.image_ids)
        if image_ids.ndim != 1:
            raise ValueError("CoordinateTable.image_ids must have shape (N,), got "
                             f"{image_ids.shape}")
        if image_ids.size and image_ids.dtype.kind not in "iuU":
            raise ValueError("CoordinateTable.image_ids must be integers or strings, got dtype "
                             f"{image_ids.dtype}")
        if image_ids.dtype.kind in "iu" or image_ids.size == 0:
            image_ids = image_ids.astype(np.int64)
        n = image_ids.shape[0]
        positions = np.asarray(self.positions_zyx_um, dtype=np.float64)
        if positions.shape != (n, 3):
            raise ValueError("CoordinateTable.positions_zyx_um must have shape (N, 3) = "
                             f"({n}, 3), got {positions.shape}")
        bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
        if bad.size:
            raise ValueError(f"CoordinateTable.positions_zyx_um is NaN or infinite at row "
                             f"{int(bad[0])}; give finite positions in micrometres")
        bad = np.flatnonzero((positions < 0).any(axis=1))
        if bad.size:
            raise ValueError(f"CoordinateTable.positions_zyx_um is negative at row {int(bad[0])} "
                             f"({positions[bad[0]].tolist()}); positions are measured from the "
                             "image origin and are >= 0")
        score = _optional_float(self.score, "score", n)
        box = _optional_float(self.box_size_um, "box_size_um", n)
        if box is not None and (box <= 0).any():
            row = int(np.flatnonzero(box <= 0)[0])
            raise ValueError(f"CoordinateTable.box_size_um must be > 0, got {box[row]} at row "
                             f"{row}")
        pid = self.particle_id
        if pid is not None:
            pid = np.asarray(pid)
            if pid.shape != (n,) or (pid.size and pid.dtype.kind not in "iu"):
                raise ValueError(f"CoordinateTable.particle_id must be ({n},) integers, got "
                                 f"shape {pid.shape} dtype {pid.dtype}")
            pid = pid.astype(np.int64)
            unique, counts = np.unique(pid, return_counts=True)
            if (counts > 1).any():
                raise ValueError(f"CoordinateTable.particle_id repeats the id "
                                 f"{int(unique[counts > 1][0])}; particle ids must be unique")
        for name, value in (("image_ids", image_ids), ("positions_zyx_um", positions),
                            ("score", score), ("box_size_um", box), ("particle_id", pid)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])


def write_coordinates_csv(path: str | os.PathLike, table: CoordinateTable) -> Path:
    """Write a :class:`CoordinateTable` to CSV, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.csv`` file; its folder must exist.
    table : CoordinateTable
        The particles. Columns ``image_id, x, y, z`` (micrometres) are always written;
        ``score``, ``box_size_um`` and ``particle_id`` when they are not None.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``table`` is not a CoordinateTable.
    """
    if not isinstance(table, CoordinateTable):
        raise ValueError(f"table must be a CoordinateTable, got {type(table).__name__}")
    pos = table.positions_zyx_um
    header = list(_REQUIRED)
    columns: list[Sequence[Any]] = [table.image_ids, pos[:, 2], pos[:, 1], pos[:, 0]]
    for name in _OPTIONAL:
        value = getattr(table, name)
        if value is not None:
            header.append(name)
            columns.append(value)
    return write_csv_table(path, header, columns)


def read_coordinates_csv(path: str | os.PathLike) -> CoordinateTable:
    """Read a coordinates CSV written by :func:`write_coordinates_csv` or by hand.

    Parameters
    ----------
    path : str or path-like
        CSV file with columns ``image_id, x, y, z`` (micrometres) and optionally
        ``score``, ``box_size_um``, ``particle_id``; other columns are ignored.

    Returns
    -------
    CoordinateTable
        ``image_ids`` are int64 when every id is an integer, else str.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If a required column is missing, or a value is empty, not a number, NaN/Inf,
        a negative coordinate, a non-positive box size or a repeated particle id (the
        message names the file, the line and the column).
    """
    table = read_csv_table(path, "coordinates")
    where = repr(str(table.path))
    missing = [c for c in _REQUIRED if c not in table.header]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; a coordinates CSV "
                         "needs the header image_id,x,y,z (positions in micrometres)")
    n = len(table.rows)
    for i in range(n):
        if not table.column("image_id")[i]:
            raise ValueError(f"{where}, line {table.lines[i]}: empty image_id; give the image "
                             "each particle belongs to")
    positions = np.zeros((n, 3))
    for i in range(n):
        for k, axis in enumerate("zyx"):
            value = parse_number(table, i, axis)
            if value < 0:
                raise ValueError(f"{where}, line {table.lines[i]}, column {axis!r}: negative "
                                 f"coordinate {value}; positions are micrometres from the image "
                                 "origin and cannot be negative")
            positions[i, k] = value
    optional: dict[str, np.ndarray | None] = {}
    for name in _OPTIONAL:
        if name not in table.header:
            optional[name] = None
            continue
        integer = name == "particle_id"
        values = np.array([parse_number(table, i, name, integer=integer) for i in range(n)],
                          dtype=np.int64 if integer else np.float64)
        if name == "box_size_um":
            bad = np.flatnonzero(values <= 0)
            if bad.size:
                raise ValueError(f"{where}, line {table.lines[bad[0]]}, column 'box_size_um': "
                                 f"{values[bad[0]]} is not a positive size in micrometres")
        if name == "particle_id":
            first_line: dict[int, int] = {}
            for i, value in enumerate(values.tolist()):
                if value in first_line:
                    raise ValueError(f"{where}, line {table.lines[i]}: particle_id {value} "
                                     f"already used on line {first_line[value]}; particle ids "
                                     "must be unique")
                first_line[value] = table.lines[i]
        optional[name] = values
    image_ids = infer_column(table.column("image_id"))
    if image_ids.dtype.kind == "f":  # e.g. "1.5": keep the text, ids are labels
        image_ids = np.array(table.column("image_id"), dtype=str)
    return CoordinateTable(image_ids=image_ids, positions_zyx_um=positions, **optional)
