"""Figures of reconstructions (:class:`~spfluo.objects.Volume`): half-map FSC, coverage.

The orthogonal slices (``object_figures``) and the isosurface (``metrics_figures``) of a
volume are registered elsewhere; this module adds, when the volume has them, the
half-map FSC curve (masked and corrected; 0.143 and 0.5 lines, resolutions marked when
measured, the optical cutoff of the PSF and Nyquist drawn, the unmasked curve in grey)
and the Fourier coverage
of the poses that made it (the volume's ``coverageFile``, written by
"reconstruct with known poses").
"""

from __future__ import annotations

import os

from ..io import read_fsc_csv, read_fsc_details, read_volume
from ..objects import Volume
from .metrics import fsc_figure
from .reconstruction import fourier_coverage_figure
from .registry import figure_maker

__all__ = ["reconstruction_figures"]


def _existing(path) -> bool:
    return bool(path) and os.path.exists(path)


@figure_maker(Volume)
def reconstruction_figures(volume) -> list:
    """Half-map FSC and Fourier coverage of a reconstruction.

    An empty list for a volume without them (e.g. a simulated ground truth, an imported
    map) or whose files are gone; the voxel size, when none is recorded, is left out of
    the axes (frequencies in cycles per voxel).
    """
    figures = []
    vs = volume.getVoxelSize() if volume.hasVoxelSize() else None
    if _existing(volume.getFscFile()):
        freqs, curves = read_fsc_csv(volume.getFscFile())
        labels = [f"half maps, {name}" for name in curves] if len(curves) > 1 else ["half maps"]
        unmasked = read_fsc_details(volume.getFscFile()).get("unmasked", {})
        cutoff_um = volume.getOpticalCutoff()
        cutoff = None
        if cutoff_um and vs is not None and max(vs) - min(vs) <= 1e-6 * max(vs):
            cutoff = vs[0] / cutoff_um
        fig = fsc_figure([(freqs, v) for v in curves.values()], voxel_size=vs, labels=labels,
                         cutoff=cutoff,
                         background={f"unmasked, {name}": (freqs, v)
                                     for name, v in unmasked.items()} or None,
                         title="gold-standard FSC between the half maps (masked, corrected)")
        figures.append(("half_map_fsc", fig))
    path = volume.getCoverageFile()
    if _existing(path):
        data = read_volume(path, voxel_size=vs).data
        fig = fourier_coverage_figure(data, voxel_size=vs,
                                      title="Fourier coverage of the poses (sum of rotated "
                                            "|OTF|², mean per particle)")
        figures.append(("fourier_coverage", fig))
    return figures
