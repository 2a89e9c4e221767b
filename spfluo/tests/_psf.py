"""Analytic PSFs for tests: a Gaussian point-sampled on any grid (an independent oracle)."""

import numpy as np

__all__ = ["analytic_gaussian"]


def analytic_gaussian(shape, voxel_size, sigma_um, centre_um=(0.0, 0.0, 0.0)):
    """``exp(-|x - c|^2 / 2 sigma^2)`` at the voxel centres, float64.

    ``x`` is measured in micrometres from voxel ``n // 2`` of each axis; ``voxel_size``,
    ``sigma_um`` and ``centre_um`` are ``(z, y, x)``.
    """
    out = np.ones(shape)
    for a, n in enumerate(shape):
        x = (np.arange(n) - n // 2) * voxel_size[a] - centre_um[a]
        prof = np.exp(-0.5 * (x / sigma_um[a]) ** 2)
        out = out * prof.reshape([-1 if b == a else 1 for b in range(3)])
    return out
