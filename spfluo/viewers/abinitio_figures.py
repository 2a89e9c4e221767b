"""Figures of an ab initio reconstruction (the Volume of "ab initio reconstruction").

Registered for :class:`~spfluo.objects.Volume`; they appear only when the volume carries
the files written by the job ``abinitio`` (its ``energiesFile``, ``marginalsFile`` and
``summaryFile`` attributes): the energy per epoch, the marginal likelihoods of the
in-plane angle per particle and the summed direction likelihood map (Eloy et al. 2023 Fig. 3,
with the true values when the input particles carried poses), and the orientation
distribution of the estimated poses.  The volume itself (slices, isosurface) is drawn by
the generic makers.
"""

from __future__ import annotations

import os

from ..io import read_energies_csv, read_marginals_npz, read_summary
from ..objects import Volume
from .abinitio import direction_map_figure, energy_figure, psi_marginals_figure
from .metrics import orientation_sphere_figure
from .registry import figure_maker

__all__ = ["abinitio_figures"]


def _path(volume, name):
    attr = getattr(volume, name, None)
    value = attr.get() if attr is not None else None
    return value if value and os.path.exists(value) else None


@figure_maker(Volume)
def abinitio_figures(volume) -> list:
    """Energy per epoch, marginal likelihoods and orientations of an ab initio run."""
    figures = []
    method = "sgd"
    summary_path = _path(volume, "summaryFile")
    if summary_path:
        method = read_summary(summary_path).get("method", "sgd")
    energies_path = _path(volume, "energiesFile")
    if energies_path:
        data = read_energies_csv(energies_path)
        if data["energy"].size:
            figures.append(("abinitio_energy", energy_figure(
                data["energy"], bands=data["band"], seconds=data["seconds"], method=method,
                title="ab initio: energy per " + ("epoch" if method == "sgd" else "chain"))))
    marginals_path = _path(volume, "marginalsFile")
    if marginals_path:
        arrays = read_marginals_npz(marginals_path)
        symmetry = int(arrays["symmetry"])
        has_truth = "true_psi_index" in arrays
        figures.append(("abinitio_psi_marginals", psi_marginals_figure(
            arrays["psi"], arrays["psi_marginals"], symmetry=symmetry,
            true_index=arrays["true_psi_index"] if has_truth else None)))
        true_dirs = arrays["directions"][arrays["true_direction_index"]] if has_truth else None
        figures.append(("abinitio_direction_map", direction_map_figure(
            arrays["directions"], arrays["direction_marginals"], true_directions=true_dirs)))
        figures.append(("abinitio_orientations", orientation_sphere_figure(
            arrays["rotations"], true=arrays["true_rotations"] if has_truth else None,
            labels=("estimated poses", "true poses (aligned)"),
            title="orientations of the particles (reference z axis)")))
    return figures
