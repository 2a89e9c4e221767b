"""Figures of a refinement (the outputs of "refine").

Registered for :class:`~spfluo.objects.Volume` and :class:`~spfluo.objects.SetOfParticles`;
they appear only when the object carries what the job ``refine`` wrote: the volume's
``refinementLog`` (per-iteration log) and ``refinedParticlesFile`` (particle table with the
pose changes), or particles with a ``poseChangeDeg`` attribute.  The volume itself
(slices, isosurface) and its half-map FSC are drawn by the generic makers.
"""

from __future__ import annotations

import os

import numpy as np

from ..io import read_particle_table, read_refine_log
from ..objects import SetOfParticles, Volume
from ..algorithms.refine.diagnostics import UNDETERMINED_NATS
from .refine import convergence_figure, in_plane_margin_histogram, pose_change_histogram
from .registry import figure_maker

__all__ = ["refinement_figures", "refined_particles_figures"]


def _path(obj, name):
    attr = getattr(obj, name, None)
    value = attr.get() if attr is not None else None
    return value if value and os.path.exists(value) else None


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


@figure_maker(Volume)
def refinement_figures(volume) -> list:
    """Convergence per outer iteration and pose changes of a refinement."""
    figures = []
    log_path = _path(volume, "refinementLog")
    if log_path:
        log = read_refine_log(log_path)
        if log["iteration"].size:
            figures.append(("refine_convergence", convergence_figure(
                log, voxel_size=volume.getVoxelSize(),
                title="refinement: energy, pose change and half-map resolution")))
    table_path = _path(volume, "refinedParticlesFile")
    if table_path:
        extra = read_particle_table(table_path).extra
        series = {}
        for key, label in (("pose_change_deg", "from the input poses"),
                           ("last_change_deg", "in the last iteration")):
            values = _finite(extra.get(key, []))
            if values.size:
                series[label] = values
        if series:
            figures.append(("refine_pose_changes", pose_change_histogram(
                series, title="rotation change of the particles (modulo the symmetry)")))
        margins = _finite(extra.get("in_plane_margin_nats", []))
        if margins.size:
            figures.append(("refine_in_plane_margins", in_plane_margin_histogram(
                margins, threshold=UNDETERMINED_NATS)))
    return figures


@figure_maker(SetOfParticles)
def refined_particles_figures(particles) -> list:
    """Rotation changes of particles refined by "refine" (nothing for other sets)."""
    items = particles.items()
    if not items or getattr(items[0], "poseChangeDeg", None) is None:
        return []
    changes = _finite([p.poseChangeDeg.get() for p in items])
    if not changes.size:
        return []
    return [("refine_pose_changes", pose_change_histogram(
        changes, labels=["from the input poses"],
        title=f"rotation change of {changes.size} refined particles"))]
