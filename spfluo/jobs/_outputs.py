"""The half-map outputs that several jobs write (file formats: :mod:`spfluo.io.results`)."""

from __future__ import annotations

import math

from ..algorithms.metrics import resolution_in_micrometres
from ..io import write_fsc_csv, write_volume
from .jobfile import Job

__all__ = ["write_half_map_outputs"]


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
