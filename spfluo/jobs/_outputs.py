"""Result files that several jobs write: numeric CSV tables and the half-map outputs.

CSV layout: one header line of column names, then one row per sample, numbers written
with ``%.10g`` (read back by the ``read_*_csv`` functions of :mod:`spfluo.jobs.compare`
and :mod:`spfluo.jobs.refine`).
"""

from __future__ import annotations

import math

import numpy as np

from ..algorithms.metrics import resolution_in_micrometres
from ..io import atomic_write_path, write_volume
from .jobfile import Job

__all__ = ["write_csv", "write_fsc_csv", "write_half_map_outputs"]


def write_csv(path, header: list[str], columns: list) -> None:
    """Write equal-length ``columns`` (one per name of ``header``) as a CSV, atomically."""
    data = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    with atomic_write_path(path) as tmp, open(tmp, "w") as fh:
        fh.write(",".join(header) + "\n")
        np.savetxt(fh, data, delimiter=",", fmt="%.10g")


def write_fsc_csv(path, curves: list) -> None:
    """FSC CSV ``frequency_per_voxel, fsc_channel_0[, ...]``: one column per curve.

    ``curves`` holds one FSC per channel (``frequencies`` in cycles per voxel and
    ``values``), or None for a channel without one (written as zeros); one at least is
    not None.
    """
    freqs = next(c.frequencies for c in curves if c is not None)
    write_csv(path, ["frequency_per_voxel"] + [f"fsc_channel_{k}" for k in range(len(curves))],
              [freqs] + [np.zeros_like(freqs) if c is None else c.values for c in curves])


def _micrometres(freq: float, voxel_size) -> float | None:
    if not (math.isfinite(freq) and freq > 0):
        return None
    return resolution_in_micrometres(freq, voxel_size[0])


def write_half_map_outputs(job: Job, result, voxel_size, channel_names: list[str]) -> dict:
    """Write outputs ``half1``, ``half2`` (OME-TIFF) and ``fsc`` (CSV) of a reconstruction.

    ``result`` has ``half_maps`` (2, C, D, D, D), ``fsc`` (one curve or None per channel)
    and ``resolution_per_voxel`` (C,).  Returns the summary entries
    ``resolution_per_voxel`` (cycles per voxel) and ``resolution_um`` (µm, None where
    no resolution was found).
    """
    write_volume(job.output("half1"), result.half_maps[0], voxel_size, channel_names=channel_names)
    write_volume(job.output("half2"), result.half_maps[1], voxel_size, channel_names=channel_names)
    write_fsc_csv(job.output("fsc"), result.fsc)
    res = [float(r) for r in result.resolution_per_voxel]
    return {"resolution_per_voxel": res,
            "resolution_um": [_micrometres(r, voxel_size) for r in res]}
