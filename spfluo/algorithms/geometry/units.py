"""Voxel sizes and unit conversions between micrometres and voxels.

Physical sizes are in micrometres (objects, files, job files, user parameters);
algorithms work in voxels.  A voxel size is a ``(z, y, x)`` tuple in micrometres.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_voxel_size"]


def as_voxel_size(voxel_size) -> np.ndarray:
    """Validate a voxel size and return it as a ``(z, y, x)`` float64 array.

    Parameters
    ----------
    voxel_size : float or sequence of 3 floats
        Voxel size in micrometres, ``(z, y, x)``; a scalar means isotropic.

    Returns
    -------
    ndarray, shape (3,), float64
        ``(z, y, x)`` voxel size in micrometres, all > 0.
    """
    try:
        v = np.asarray(voxel_size, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"voxel_size must be a number or a (z, y, x) tuple in micrometres, got {voxel_size!r}"
        ) from None
    if v.ndim == 0:
        v = np.full(3, float(v))
    if v.shape != (3,):
        raise ValueError(
            f"voxel_size must be a number or a (z, y, x) tuple of 3 values in micrometres, "
            f"got {voxel_size!r}"
        )
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(
            f"voxel_size must be finite and > 0 (micrometres, (z, y, x)), got {voxel_size!r}"
        )
    return v
