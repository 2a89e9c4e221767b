"""Particle poses in CSV files, and :class:`PoseTable`, the in-memory pose set of a file.

Stored poses follow the convention of :mod:`spfluo.algorithms.geometry`: a 4x4 matrix
``[[R, t], [0, 0, 0, 1]]`` in ``(x, y, z)`` order that maps reference coordinates
(relative to the box centre) to particle coordinates, with the translation ``t`` in
micrometres. ``geometry.Poses.from_stored(table.matrices, voxel_size)`` turns a table into
algorithm poses (zyx frame, voxels).

Two CSV layouts, one header line, one particle per line:

``format="matrix"`` (exact, the default)::

    id,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23[,other columns]

    the first three rows of the 4x4 matrix (xyz order; m03, m13, m23 = t_x, t_y, t_z
    in micrometres).

``format="euler"``::

    id,rot,tilt,psi,tx,ty,tz[,other columns]

    RELION ZYZ Euler angles in degrees (``geometry.matrix_from_euler(..., frame="xyz")``)
    and the translation in micrometres.

The reader detects the layout from the header (matrix columns win when a file has both;
its Euler columns are then ignored).
Any other column (``path`` of the particle file, ``score``, ...) passes through in
:attr:`PoseTable.extra`, so one CSV can describe a particle set. Blank lines and lines
starting with ``#`` are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spfluo.algorithms.geometry import euler_from_matrix, matrix_from_euler
from spfluo.io._csvtable import infer_column, parse_number, read_csv_table, write_csv_table

__all__ = ["PoseTable", "read_poses_csv", "write_poses_csv", "ORTHONORMAL_TOLERANCE"]

#: Largest ``max |R^T R - I|`` accepted for a stored rotation. Rotations within it are
#: replaced by the nearest rotation matrix (so files written with few decimals load).
ORTHONORMAL_TOLERANCE = 1e-3
_EXACT = 1e-9  # deviations below this are rounding of exact files: left untouched

MATRIX_COLUMNS = tuple(f"m{r}{c}" for r in range(3) for c in range(4))
EULER_COLUMNS = ("rot", "tilt", "psi", "tx", "ty", "tz")
_FORMATS = ("matrix", "euler")


def _rotation_errors(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-matrix ``max |R^T R - I|`` and determinant, for R of shape (N, 3, 3)."""
    gram = np.matmul(np.swapaxes(R, -1, -2), R)
    return np.abs(gram - np.eye(3)).max(axis=(-2, -1)), np.linalg.det(R)


def _nearest_rotations(R: np.ndarray) -> np.ndarray:
    """Nearest rotation matrices (Frobenius norm) of near-rotations, batched (polar factor)."""
    U, _, Vt = np.linalg.svd(R)
    return np.matmul(U, Vt)  # det(U Vt) = +1 for near-rotations with det > 0


def _invalid_rotation_rows(R: np.ndarray) -> np.ndarray:
    err, det = _rotation_errors(R)
    return np.flatnonzero((err > ORTHONORMAL_TOLERANCE) | (det <= 0))


@dataclass(frozen=True, eq=False)
class PoseTable:
    """Poses of a particle set as stored in files.

    Attributes
    ----------
    ids : ndarray, shape (N,), int64
        Unique particle identifiers.
    matrices : ndarray, shape (N, 4, 4), float64
        Stored poses: xyz order, translations in micrometres, last row ``(0, 0, 0, 1)``.
        Rotations are orthonormal (inputs within :data:`ORTHONORMAL_TOLERANCE` are
        replaced by the nearest rotation).
    extra : dict of str to ndarray, shape (N,)
        Other per-particle columns (e.g. ``"path"`` of the particle file, ``"score"``):
        int64, float64 or str arrays.

    Raises
    ------
    ValueError
        On construction, if shapes disagree, ids repeat, values are NaN/Inf, a last row
        is not ``(0, 0, 0, 1)`` or a rotation is not orthonormal with determinant +1.
    """

    ids: np.ndarray
    matrices: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        ids = np.asarray(self.ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"ids must be a (N,) array of integers, got shape {ids.shape} "
                             f"dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        n = ids.shape[0]
        M = np.asarray(self.matrices)
        if M.shape != (n, 4, 4):
            raise ValueError(f"matrices must have shape (N, 4, 4) = ({n}, 4, 4), one per id, "
                             f"got {M.shape}")
        if M.size and M.dtype.kind not in "iuf":
            raise ValueError(f"matrices must be real numbers, got dtype {M.dtype}")
        M = np.array(M, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(M).all(axis=(1, 2)))
        if bad.size:
            raise ValueError(f"matrices[{bad[0]}] (id {ids[bad[0]]}) contains NaN or infinite "
                             "values; give finite poses")
        bad = np.flatnonzero(np.abs(M[:, 3] - [0.0, 0.0, 0.0, 1.0]).max(axis=1) > 1e-6) if n else []
        if len(bad):
            raise ValueError(f"matrices[{bad[0]}] (id {ids[bad[0]]}) has last row "
                             f"{M[bad[0], 3].tolist()}; homogeneous pose matrices end with "
                             "(0, 0, 0, 1)")
        M[:, 3] = [0.0, 0.0, 0.0, 1.0]
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"ids repeat the id {int(unique[counts > 1][0])}; every pose needs "
                             "its own id")
        if n:
            R = M[:, :3, :3]
            bad = _invalid_rotation_rows(R)
            if bad.size:
                raise ValueError(f"matrices[{bad[0]}] (id {ids[bad[0]]}) is not a rotation "
                                 f"(max |R^T R - I| must be <= {ORTHONORMAL_TOLERANCE:g}, "
                                 "determinant +1); give orthonormal rotation matrices")
            err, _ = _rotation_errors(R)
            fix = np.flatnonzero(err > _EXACT)
            if fix.size:
                M[fix, :3, :3] = _nearest_rotations(R[fix])
        if not isinstance(self.extra, Mapping):
            raise ValueError(f"extra must be a dict of column name -> (N,) array, got "
                             f"{type(self.extra).__name__}")
        extra = {}
        for name, values in self.extra.items():
            name = str(name)
            if name in ("id",) + MATRIX_COLUMNS + EULER_COLUMNS:
                raise ValueError(f"extra column {name!r} clashes with a pose column; rename it")
            array = np.asarray(values)
            if array.shape != (n,):
                raise ValueError(f"extra column {name!r} must have shape ({n},), one value per "
                                 f"pose, got {array.shape}")
            extra[name] = array
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "matrices", M)
        object.__setattr__(self, "extra", extra)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def rotations(self) -> np.ndarray:
        """``(N, 3, 3)`` rotations in the xyz frame."""
        return self.matrices[:, :3, :3]

    @property
    def translations_um(self) -> np.ndarray:
        """``(N, 3)`` translations ``(t_x, t_y, t_z)`` in micrometres."""
        return self.matrices[:, :3, 3]


def write_poses_csv(path: str | os.PathLike, ids: Sequence[int] | np.ndarray,
                    matrices: np.ndarray, *, format: str = "matrix",
                    extra: Mapping[str, Sequence[Any]] | None = None) -> Path:
    """Write stored poses to a CSV file, atomically.

    Parameters
    ----------
    path : str or path-like
        Destination ``.csv`` file; its folder must exist.
    ids : array_like of int, shape (N,)
        Unique particle identifiers.
    matrices : ndarray, shape (N, 4, 4)
        Stored poses (xyz order, translations in micrometres).
    format : {"matrix", "euler"}, default "matrix"
        ``"matrix"``: columns ``id, m00..m23`` (exact). ``"euler"``: columns
        ``id, rot, tilt, psi`` (RELION ZYZ, degrees) and ``tx, ty, tz`` (micrometres).
    extra : dict of str to array_like, shape (N,), optional
        More columns written after the pose columns (e.g. ``{"path": [...]}``).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``format`` is unknown or the poses are invalid (see :class:`PoseTable`).
    """
    if format not in _FORMATS:
        raise ValueError(f"format must be 'matrix' or 'euler', got {format!r}")
    table = PoseTable(ids=np.asarray(ids), matrices=matrices, extra=dict(extra or {}))
    M = table.matrices
    if format == "matrix":
        header = ["id", *MATRIX_COLUMNS]
        columns: list[Sequence[Any]] = [table.ids]
        columns += [M[:, r, c] for r in range(3) for c in range(4)]
    else:
        angles = (euler_from_matrix(M[:, :3, :3], degrees=True, frame="xyz") if len(table)
                  else np.zeros((0, 3)))
        header = ["id", *EULER_COLUMNS]
        columns = [table.ids, angles[:, 0], angles[:, 1], angles[:, 2], M[:, 0, 3], M[:, 1, 3],
                   M[:, 2, 3]]
    for name, values in table.extra.items():
        header.append(name)
        columns.append(values)
    return write_csv_table(path, header, columns)


def read_poses_csv(path: str | os.PathLike) -> PoseTable:
    """Read a poses CSV (matrix or Euler layout, detected from the header).

    Parameters
    ----------
    path : str or path-like
        CSV file as written by :func:`write_poses_csv` or by hand.

    Returns
    -------
    PoseTable
        ``matrices`` in xyz order with translations in micrometres; every other column in
        ``extra`` (int64, float64 or str arrays).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the header has neither the matrix nor the Euler columns, or a value is empty,
        not a number or NaN, an id repeats, or a rotation is not orthonormal (within
        :data:`ORTHONORMAL_TOLERANCE`); the message names the file, the line and the fix.
    """
    table = read_csv_table(path, "poses")
    where = repr(str(table.path))
    header = set(table.header)
    if "id" in header and header.issuperset(MATRIX_COLUMNS):
        pose_columns = ("id",) + MATRIX_COLUMNS
        layout = "matrix"
    elif "id" in header and header.issuperset(EULER_COLUMNS):
        pose_columns = ("id",) + EULER_COLUMNS
        layout = "euler"
    else:
        raise ValueError(f"{where}: the header ({', '.join(table.header)}) has neither the "
                         f"matrix columns (id, {', '.join(MATRIX_COLUMNS)}) nor the Euler "
                         f"columns (id, {', '.join(EULER_COLUMNS)}); write one of these headers")
    n = len(table.rows)
    ids = np.zeros(n, dtype=np.int64)
    first_line: dict[int, int] = {}
    values = np.zeros((n, len(pose_columns) - 1))
    for i in range(n):
        ids[i] = parse_number(table, i, "id", integer=True)
        if ids[i] in first_line:
            raise ValueError(f"{where}, line {table.lines[i]}: id {ids[i]} already used on line "
                             f"{first_line[ids[i]]}; every pose needs its own id")
        first_line[int(ids[i])] = table.lines[i]
        for k, name in enumerate(pose_columns[1:]):
            values[i, k] = parse_number(table, i, name)
    M = np.zeros((n, 4, 4))
    M[:, 3, 3] = 1.0
    if layout == "matrix":
        M[:, :3, :] = values.reshape(n, 3, 4)
        bad = _invalid_rotation_rows(M[:, :3, :3])
        if bad.size:
            err, det = _rotation_errors(M[bad[:1], :3, :3])
            raise ValueError(f"{where}, line {table.lines[bad[0]]}: the rotation m00..m22 is not "
                             f"orthonormal (max |R^T R - I| = {err[0]:.3g}, det = {det[0]:.3g}; "
                             f"tolerance {ORTHONORMAL_TOLERANCE:g}, det must be +1); write the "
                             "rotation with more decimals or fix the matrix")
    elif n:
        M[:, :3, :3] = matrix_from_euler(values[:, :3], degrees=True, frame="xyz")
        M[:, :3, 3] = values[:, 3:]
    reserved = ("id",) + MATRIX_COLUMNS + EULER_COLUMNS
    extra = {name: infer_column(table.column(name)) for name in table.header
             if name not in reserved}
    return PoseTable(ids=ids, matrices=M, extra=extra)
