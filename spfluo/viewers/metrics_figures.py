"""Figures of evaluation results: comparisons, volumes (isosurface), particle orientations.

- :class:`~spfluo.objects.VolumeComparison`: the FSC curve(s) with thresholds and
  resolutions, the conical FSC map of each channel, and the pose-error histogram when
  particle poses were compared;
- :class:`~spfluo.objects.Volume`: the isosurface beside the orthogonal slices;
- :class:`~spfluo.objects.SetOfParticles` with poses: the orientation distribution.
"""

from __future__ import annotations

import os

import numpy as np

from ..algorithms.geometry import swap_xyz_zyx
from ..io import read_conical_csv, read_fsc_csv, read_pose_error_parts, read_pose_errors_csv
from ..objects import SetOfParticles, Volume, VolumeComparison
from ..objects.arrays import load_array
from .isosurface import isosurface_figure
from .metrics import (
    conical_fsc_figure,
    fsc_figure,
    orientation_sphere_figure,
    in_plane_error_figure,
    pose_error_histogram,
)
from .labels import object_name
from .registry import figure_maker

__all__ = ["comparison_figures", "volume_isosurface_figures", "particle_orientation_figures"]


def _exists(path) -> bool:
    return bool(path) and os.path.exists(path)


@figure_maker(VolumeComparison)
def comparison_figures(comparison) -> list:
    """FSC, conical FSC (one figure per channel) and pose errors of a comparison."""
    figures = []
    vs = comparison.getVoxelSize()
    if _exists(comparison.getFscFile()):
        freqs, curves = read_fsc_csv(comparison.getFscFile())
        labels = list(curves) if len(curves) > 1 else ["FSC against the reference"]
        m = comparison.getMetrics()
        numbers = [f"{name} {m[key]:{fmt}}" for name, key, fmt in
                   (("SSIM", "ssim", ".3f"), ("PSNR (dB)", "psnr_db", ".1f"))
                   if m[key] is not None]
        title = "FSC against the reference" + (f" ({', '.join(numbers)})" if numbers else "")
        fig = fsc_figure([(freqs, v) for v in curves.values()], voxel_size=vs, labels=labels,
                         title=title)
        figures.append(("fsc", fig))
    if _exists(comparison.getConicalFscFile()):
        phi1, phi2, maps = read_conical_csv(comparison.getConicalFscFile())
        for k, (label, res) in enumerate(maps.items()):
            fig = conical_fsc_figure(res, phi1, phi2, voxel_size=vs, threshold=0.143,
                                     title=f"conical FSC, {label}" if len(maps) > 1 else None)
            figures.append(("conical_fsc" if k == 0 else f"conical_fsc_{k}", fig))
    if _exists(comparison.getPoseErrorsFile()):
        _, errors = read_pose_errors_csv(comparison.getPoseErrorsFile())
        sym = comparison.symmetry.get() or 1
        fig = pose_error_histogram(errors, labels=["pose errors"],
                                   title=f"pose errors after global alignment"
                                         f"{f' (modulo C{sym})' if sym > 1 else ''}")
        figures.append(("pose_errors", fig))
        parts = read_pose_error_parts(comparison.getPoseErrorsFile())
        if parts is not None and sym > 1:
            figures.append(("pose_errors_axis_in_plane",
                            in_plane_error_figure(parts[0], parts[1], sym)))
    if not figures:
        raise ValueError("this comparison has no curve file left to show (were the run's "
                         "extra/ files deleted?)")
    return figures


@figure_maker(Volume)
def volume_isosurface_figures(volume) -> list:
    """The isosurface (Otsu level) of every channel beside the orthogonal slices."""
    title = f"{object_name(volume)}: isosurface (Otsu level) beside its slices"
    fig = isosurface_figure(load_array(volume), volume.getVoxelSize(), title=title)
    return [("isosurface", fig)]


@figure_maker(SetOfParticles)
def particle_orientation_figures(particles) -> list:
    """Orientation distribution of a particle set with poses (nothing without poses)."""
    if not particles.hasPoses():
        return []
    matrices = [p.getTransform().getMatrix() for p in particles.items() if p.hasPose()]
    if not matrices:
        return []
    rotations = swap_xyz_zyx(np.stack(matrices))[:, :3, :3]
    fig = orientation_sphere_figure(rotations, labels=("particle poses", "true"),
                                    title=f"orientations of {len(matrices)} particles")
    return [("orientations", fig)]
