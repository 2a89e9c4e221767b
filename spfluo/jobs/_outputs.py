"""The half-map outputs that several jobs write (file formats: :mod:`spfluo.io.results`)."""

from __future__ import annotations

import dataclasses

from ..algorithms.reconstruct import map_gold_standard
from ..algorithms.reconstruct.mask import default_mask_radius
from ..algorithms.resolution import NYQUIST, optical_cutoff
from ..io import write_fsc_csv, write_volume
from .jobfile import Job

__all__ = ["write_half_map_outputs"]


def write_half_map_outputs(job: Job, result, voxel_size, channel_names: list[str], *,
                           psf=None) -> dict:
    """Write outputs ``half1``, ``half2`` (OME-TIFF) and ``fsc`` (CSV) of a reconstruction.

    ``result`` has ``half_maps`` (2, C, D, D, D) and, from
    :func:`spfluo.algorithms.reconstruct.reconstruct`, ``fsc_details`` (the gold-standard
    curves and verdicts, one per channel).  Without them (e.g. a refinement) the masked
    FSC of the half maps corrected by phase-randomised maps is computed here, with the
    optical cutoff of ``psf``.  Returns the summary entries, one value per channel:
    ``resolution_per_voxel`` and ``resolution_um`` (None unless measured),
    ``resolution_status`` (``"measured"``, ``"not reached"``, ``"beyond cutoff"``),
    ``resolution_text`` (the line a user reads), and ``cutoff_per_voxel``,
    ``cutoff_um``, ``nyquist_um``.
    """
    vs = float(voxel_size[0])
    write_volume(job.output("half1"), result.half_maps[0], voxel_size, channel_names=channel_names)
    write_volume(job.output("half2"), result.half_maps[1], voxel_size, channel_names=channel_names)
    details = getattr(result, "fsc_details", None)
    if details is None:
        cutoff = None if psf is None else optical_cutoff(psf)
        details = map_gold_standard(result.half_maps[0], result.half_maps[1],
                                    mask_radius=default_mask_radius(result.half_maps.shape[-1]),
                                    voxel_size_um=vs, cutoff_per_voxel=cutoff)
    write_fsc_csv(job.output("fsc"), [None if d is None else d.corrected for d in details],
                  extra={"unmasked": [None if d is None else d.unmasked for d in details],
                         "substituted": [None if d is None else d.substituted
                                         for d in details]})
    # the lengths of the verdicts in the particles' micrometres (an algorithm that does not
    # know the voxel size leaves them out)
    res = [None if d is None else dataclasses.replace(d.resolution, voxel_size_um=vs)
           for d in details]
    cutoff = next((r.cutoff_per_voxel for r in res if r is not None), None)
    return {
        "resolution_per_voxel": [r.frequency_per_voxel if r is not None and r.measured else None
                                 for r in res],
        "resolution_um": [None if r is None else r.um for r in res],
        "resolution_status": [None if r is None else r.status for r in res],
        "resolution_text": ["empty half maps" if r is None else r.text() for r in res],
        "cutoff_per_voxel": cutoff,
        "cutoff_um": None if not cutoff else vs / cutoff,
        "nyquist_um": vs / NYQUIST,
    }
