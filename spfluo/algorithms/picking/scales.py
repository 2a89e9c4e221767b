"""The scales of the picking filters, all set by the particle diameter.

The candidates (:mod:`~spfluo.algorithms.picking.candidates`), the features
(:mod:`~spfluo.algorithms.picking.features`) and the tiles
(:mod:`~spfluo.algorithms.picking.tiles`, whose halos must cover these filters) read them
here.  Standard deviations are in voxels per axis ``(z, y, x)``; the diameter and the
voxel size in micrometres.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SMOOTHING", "REACH", "BLOB_POOL_SIGMA", "picking_sigmas", "z_window", "blob_pool"]

#: Smoothing of the volume: a Gaussian of ``SMOOTHING * diameter`` micrometres.
SMOOTHING = 1.0 / 16.0
#: A candidate moves to the blob maximum of its plane within this many diameters.
REACH = 0.5
#: The blob map of the planes is computed on laterally pooled voxels, as coarse as keeps
#: its lateral sigma at least this many pooled voxels (:func:`blob_pool`).
BLOB_POOL_SIGMA = 2.5


def picking_sigmas(vs, diameter: float) -> dict:
    """Gaussian standard deviations (voxels, per axis z, y, x) of the picking filters.

    ``smooth``: the volume, ``diameter / 16``; ``blob``: the blob map of the planes,
    ``diameter / 4`` along z and ``r / sqrt(2)`` laterally; ``profile``: the z profiles,
    half a radius laterally, none along z.
    """
    vs = np.asarray(vs, dtype=np.float64)
    s = 0.5 * diameter / np.sqrt(2.0)
    return {"smooth": SMOOTHING * diameter / vs,
            "blob": np.array([0.25 * diameter, s, s]) / vs,
            "profile": np.array([0.0, 0.25 * diameter, 0.25 * diameter]) / vs}


def z_window(vs, diameter: float) -> int:
    """Half a diameter along z, in voxels (>= 1)."""
    return max(1, int(round(0.5 * diameter / vs[0])))


def blob_pool(vs, diameter: float) -> int:
    """Lateral pooling factor (voxels per pooled voxel along y and x) of the blob map whose
    local maxima seed the candidates: 1 while its lateral sigma is below 5 voxels.

    The map is smooth on the scale of its sigma, so its maxima are found as well on
    coarser voxels, at a fraction of the cost; each seed is then refined on the full grid.
    """
    sig = picking_sigmas(vs, diameter)["blob"]
    return max(1, int(np.floor(min(sig[1], sig[2]) / BLOB_POOL_SIGMA)))
