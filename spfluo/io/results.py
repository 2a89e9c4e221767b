"""Result files of the jobs: curves, histories, marginals and summaries.

A job writes these files; a protocol's output step and the viewers read them back.  One
writer and one reader per format:

- FSC curves, CSV ``frequency_per_voxel, fsc_channel_0[, ...]`` (jobs ``compare``,
  ``reconstruct`` and ``refine``): :func:`write_fsc_csv`, :func:`read_fsc_csv`;
- conical FSC maps, CSV ``phi1_deg, phi2_deg, resolution_per_voxel_channel_0[, ...]``,
  one row per direction, phi1 major (job ``compare``): :func:`write_conical_csv`,
  :func:`read_conical_csv`;
- pose errors, CSV ``id, error_deg`` (job ``compare``): :func:`write_pose_errors_csv`,
  :func:`read_pose_errors_csv`;
- the per-iteration log of a refinement, CSV :data:`REFINE_LOG_COLUMNS` then
  ``resolution_per_voxel_channel_<c>`` (job ``refine``): :func:`write_refine_log`,
  :func:`read_refine_log`;
- the energy per epoch of an ab initio run, CSV ``epoch, energy, band, seconds`` (job
  ``abinitio``): :func:`write_energies_csv`, :func:`read_energies_csv`;
- the marginal likelihoods of an ab initio run, NumPy ``.npz`` (job ``abinitio``):
  :func:`write_marginals_npz`, :func:`read_marginals_npz`;
- summaries, reports and metrics, JSON objects (every job): written with
  :func:`spfluo.io.write_json_atomic`, read with :func:`read_summary`;
- the error of a failed job, JSON ``step, type, message, stage, where`` (every job, written
  by ``python -m spfluo.jobs``): :func:`write_job_error`, :func:`read_job_error`.

Numeric CSV layout: one header line of column names, then one row per sample, numbers
written with ``%.10g``.  Every writer is atomic (:mod:`spfluo.io.atomic`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from spfluo.io.atomic import atomic_write_path

__all__ = [
    "write_fsc_csv",
    "read_fsc_csv",
    "read_fsc_details",
    "write_conical_csv",
    "read_conical_csv",
    "write_pose_errors_csv",
    "read_pose_errors_csv",
    "REFINE_LOG_COLUMNS",
    "write_refine_log",
    "read_refine_log",
    "write_energies_csv",
    "read_energies_csv",
    "write_marginals_npz",
    "read_marginals_npz",
    "read_summary",
    "write_job_error",
    "read_job_error",
]

#: Columns of the per-iteration refinement log (then ``resolution_per_voxel_channel_<c>``).
REFINE_LOG_COLUMNS = ("iteration", "phase", "step_deg", "range_deg", "energy", "pose_energy",
                      "median_change_deg", "mean_change_deg", "median_shift_change_voxels",
                      "seconds")


# ----------------------------------------------------------------------------- numeric CSV
def _write_csv(path, header: list[str], columns: list) -> None:
    """Write equal-length ``columns`` (one per name of ``header``) as a CSV, atomically."""
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, data, delimiter=",", fmt="%.10g")


def _read_csv(path, required: tuple[str, ...], what: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{what} file {path} does not exist")
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path} is not a {what} file: columns {missing} are missing "
                         f"(got {header})")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.shape[0] == 0 or data.shape[1] != len(header):
        raise ValueError(f"{path}: expected {len(header)} columns and at least one row")
    return {name: data[:, k] for k, name in enumerate(header)}


# ----------------------------------------------------------------------------- FSC
def write_fsc_csv(path, curves: list, *, extra: dict | None = None) -> None:
    """FSC CSV ``frequency_per_voxel, fsc_channel_0[, ...]``: one column per curve.

    ``curves`` holds one FSC per channel (``frequencies`` in cycles per voxel and
    ``values``), or None for a channel without one (written as zeros); one at least is
    not None.  ``extra`` maps a name to more curves, one per channel, written as
    columns ``<name>_channel_<c>`` after them (e.g. the unmasked and the substituted
    curves behind a gold-standard FSC; :func:`read_fsc_details`).
    """
    freqs = next(c.frequencies for c in curves if c is not None)
    header = ["frequency_per_voxel"] + [f"fsc_channel_{k}" for k in range(len(curves))]
    columns = [freqs] + [np.zeros_like(freqs) if c is None else c.values for c in curves]
    for name, more in (extra or {}).items():
        header += [f"{name}_channel_{k}" for k in range(len(more))]
        columns += [np.zeros_like(freqs) if c is None else c.values for c in more]
    _write_csv(path, header, columns)


def read_fsc_csv(path) -> tuple[np.ndarray, dict]:
    """FSC curves of a comparison or of two half maps.

    Returns
    -------
    frequencies : ndarray, shape (S,)
        Cycles per voxel.
    curves : dict of str to ndarray, shape (S,)
        ``{"channel 0": fsc, ...}``.
    """
    cols = _read_csv(path, ("frequency_per_voxel",), "FSC")
    curves = {name.replace("fsc_channel_", "channel "): v for name, v in cols.items()
              if name.startswith("fsc_channel_")}
    if not curves:
        raise ValueError(f"{path} holds no fsc_channel_<c> column")
    return cols["frequency_per_voxel"], curves


def read_fsc_details(path) -> dict:
    """The extra curves of an FSC CSV (:func:`write_fsc_csv` ``extra``).

    Returns
    -------
    dict of str to dict of str to ndarray
        ``{"unmasked": {"channel 0": values, ...}, ...}``; empty when the file has none.
    """
    cols = _read_csv(path, ("frequency_per_voxel",), "FSC")
    out: dict = {}
    for name, values in cols.items():
        if name == "frequency_per_voxel" or name.startswith("fsc_channel_") \
                or "_channel_" not in name:
            continue
        kind, channel = name.rsplit("_channel_", 1)
        out.setdefault(kind, {})[f"channel {channel}"] = values
    return out


# ----------------------------------------------------------------------------- conical FSC
def write_conical_csv(path, maps: list) -> None:
    """Conical FSC CSV ``phi1_deg, phi2_deg, resolution_per_voxel_channel_0[, ...]``.

    ``maps`` holds one conical FSC per channel, on one grid of directions: ``phi1``
    (n_phi1,) azimuths and ``phi2`` (n_phi2,) inclinations from +z in radians, and
    ``resolution`` (n_phi1, n_phi2) in cycles per voxel.  One row per direction, phi1
    major.
    """
    p1, p2 = np.meshgrid(np.degrees(maps[0].phi1), np.degrees(maps[0].phi2), indexing="ij")
    _write_csv(path,
               ["phi1_deg", "phi2_deg"]
               + [f"resolution_per_voxel_channel_{c}" for c in range(len(maps))],
               [p1.ravel(), p2.ravel()] + [m.resolution.ravel() for m in maps])


def read_conical_csv(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """Conical FSC resolution maps of a comparison.

    Returns
    -------
    phi1 : ndarray, shape (n_phi1,)
        Azimuths, radians, increasing.
    phi2 : ndarray, shape (n_phi2,)
        Inclinations from +z, radians, increasing.
    maps : dict of str to ndarray, shape (n_phi1, n_phi2)
        ``{"channel 0": resolution in cycles per voxel, ...}``.
    """
    cols = _read_csv(path, ("phi1_deg", "phi2_deg"), "conical FSC")
    p1, p2 = np.unique(cols["phi1_deg"]), np.unique(cols["phi2_deg"])
    n = len(cols["phi1_deg"])
    if n != p1.size * p2.size:
        raise ValueError(f"{path}: {n} rows do not form a phi1 x phi2 grid "
                         f"({p1.size} x {p2.size})")
    order = np.lexsort((cols["phi2_deg"], cols["phi1_deg"]))  # phi1 major
    prefix = "resolution_per_voxel_channel_"
    maps = {name.replace(prefix, "channel "): v[order].reshape(p1.size, p2.size)
            for name, v in cols.items() if name.startswith(prefix)}
    if not maps:
        raise ValueError(f"{path} holds no {prefix}<c> column")
    return np.radians(p1), np.radians(p2), maps


# ----------------------------------------------------------------------------- pose errors
def write_pose_errors_csv(path, ids, errors_deg, axis_deg=None, in_plane_deg=None) -> None:
    """Pose errors CSV ``id, error_deg[, axis_error_deg, in_plane_error_deg]``: ``ids``
    (N,), the total errors (N,) degrees and, for Cn particles, the error of the symmetry
    axis and the signed error about it (degrees)."""
    header, columns = ["id", "error_deg"], [ids, errors_deg]
    if axis_deg is not None:
        header += ["axis_error_deg", "in_plane_error_deg"]
        columns += [axis_deg, in_plane_deg]
    _write_csv(path, header, columns)


def read_pose_errors_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """``(ids (N,) int64, errors (N,) degrees)`` of a comparison."""
    cols = _read_csv(path, ("id", "error_deg"), "pose errors")
    return cols["id"].astype(np.int64), cols["error_deg"]


def read_pose_error_parts(path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(axis (N,), in-plane (N,))`` errors in degrees of a comparison, or None when the
    file has no such columns (written before they existed)."""
    cols = _read_csv(path, ("id", "error_deg"), "pose errors")
    if "axis_error_deg" not in cols or "in_plane_error_deg" not in cols:
        return None
    return cols["axis_error_deg"], cols["in_plane_error_deg"]


# ----------------------------------------------------------------------------- refine log
def write_refine_log(path, history) -> None:
    """The per-iteration log of a refinement, one row per outer iteration.

    ``history`` (a :class:`spfluo.algorithms.refine` history) has the arrays (I,)
    ``iteration``, ``phase``, ``step_deg``, ``range_deg``, ``energy``, ``pose_energy``,
    ``median_change_deg``, ``mean_change_deg``, ``median_shift_change`` (voxels),
    ``seconds`` and ``resolution_per_voxel`` (I, C); an empty history writes the header
    only.
    """
    n_ch = history.resolution_per_voxel.shape[1]
    header = list(REFINE_LOG_COLUMNS) + [f"resolution_per_voxel_channel_{c}"
                                         for c in range(n_ch)]
    columns = [history.iteration, history.phase, history.step_deg, history.range_deg,
               history.energy, history.pose_energy, history.median_change_deg,
               history.mean_change_deg, history.median_shift_change, history.seconds]
    columns += [history.resolution_per_voxel[:, c] for c in range(n_ch)]
    if len(history) == 0:
        with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
            fh.write(",".join(header) + "\n")
        return
    _write_csv(path, header, columns)


def read_refine_log(path) -> dict:
    """The per-iteration log of a refinement.

    Returns
    -------
    dict of str to ndarray, shape (I,)
        The columns of :data:`REFINE_LOG_COLUMNS` (``phase`` 0 exhaustive, 1 continuous;
        ``range_deg`` inf for a global search) and ``resolution`` (I, C), the half-map FSC
        resolution per channel in cycles per voxel (NaN without half maps).
    """
    if not os.path.exists(path):
        raise ValueError(f"refinement log {path} does not exist")
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    missing = [c for c in REFINE_LOG_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"{path} is not a refinement log: columns {missing} are missing")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if data.size == 0:
        data = np.zeros((0, len(header)))
    if data.shape[1] != len(header):
        raise ValueError(f"{path}: expected {len(header)} columns, got {data.shape[1]}")
    cols = {name: data[:, k] for k, name in enumerate(header)}
    res = [name for name in header if name.startswith("resolution_per_voxel_channel_")]
    out = {name: cols[name] for name in REFINE_LOG_COLUMNS}
    out["resolution"] = np.column_stack([cols[r] for r in res]) if res else \
        np.zeros((data.shape[0], 0))
    return out


# ----------------------------------------------------------------------------- ab initio
def write_energies_csv(path, energies, bands, seconds) -> None:
    """Energies CSV ``epoch, energy, band, seconds`` of an ab initio run.

    ``energies`` (E,) the mean relative energy of each epoch (annealing: of each chain),
    ``bands`` (E,) the band of the volume grid, ``seconds`` (E,) the epoch's wall time;
    epochs are numbered from 1.
    """
    with atomic_write_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "energy", "band", "seconds"])
        for k, (e, b, s) in enumerate(zip(energies, bands, seconds)):
            writer.writerow([k + 1, f"{e:.10g}", int(b), f"{s:.6g}"])


def read_energies_csv(path) -> dict:
    """The energies CSV of an ab initio run: ``{"epoch", "energy", "band", "seconds"}`` arrays."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != ["epoch", "energy", "band", "seconds"]:
        raise ValueError(f"{path} is not an ab initio energies CSV (header "
                         f"{rows[0] if rows else 'missing'})")
    data = np.array([[float(v) for v in row] for row in rows[1:]], dtype=float).reshape(-1, 4)
    return {"epoch": data[:, 0].astype(int), "energy": data[:, 1],
            "band": data[:, 2].astype(int), "seconds": data[:, 3]}


def write_marginals_npz(path, marginals: dict) -> None:
    """The marginal likelihoods of an ab initio run, as a NumPy ``.npz``.

    ``marginals`` maps names to arrays: ``ids`` (N,), ``psi`` (M_psi,) radians,
    ``directions`` (M_d, 3) in ``(x, y, z)``, ``symmetry`` (0-d), ``psi_marginals``
    (N, M_psi), ``direction_marginals`` (N, M_d), ``rotations`` (N, 3, 3) zyx frame and,
    with true poses, ``true_rotations`` (N, 3, 3), ``true_psi_index`` and
    ``true_direction_index`` (N,), ``pose_errors_deg`` (N,).
    """
    with atomic_write_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **marginals)


def read_marginals_npz(path) -> dict:
    """The arrays of a marginals ``.npz`` (:func:`write_marginals_npz`), by name."""
    with np.load(path, allow_pickle=False) as m:
        return {k: m[k] for k in m.files}


# ----------------------------------------------------------------------------- summaries
def read_summary(path) -> dict:
    """The JSON object a job wrote (its summary, report or metrics).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not JSON or holds something else than an object.
    """
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- job errors
def write_job_error(path, *, step: str, error_type: str, message: str,
                    stage: str | None = None, where: str | None = None) -> None:
    """Write why a job failed (JSON object), atomically.

    Parameters
    ----------
    step : str
        The job's step (``abinitio``, ``extract``...).
    error_type : str
        The exception's class name (``JobError``, ``MemoryError``, ``OSError``...).
    message : str
        The reason, one line when possible.
    stage : str, optional
        The last progress line the job logged (where it was).
    where : str, optional
        ``file:line in function`` of the innermost spfluo frame, for unexpected errors.
    """
    data = {"step": step, "type": error_type, "message": message, "stage": stage,
            "where": where}
    with atomic_write_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8")


def read_job_error(path) -> str | None:
    """The reason a job failed, as one text, or None when there is no (readable) error file.

    A rejected input (``JobError``, ``ValueError``) reads as its message; any other error
    as ``<type> in job <step> (<where>; after: <stage>): <message>``.
    """
    try:
        data = read_summary(path)
    except (OSError, ValueError):
        return None
    message = str(data.get("message") or "").strip()
    kind = data.get("type") or "error"
    if kind in ("JobError", "ValueError", "FileNotFoundError"):
        return message
    context = "; ".join(part for part in (data.get("where"), f"after: {data['stage']}"
                                          if data.get("stage") else None) if part)
    return (f"{kind} in job {data.get('step', '?')}" + (f" ({context})" if context else "")
            + f": {message}")
