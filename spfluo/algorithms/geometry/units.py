"""Voxel sizes and unit conversions between micrometres and voxels.

Physical sizes are in micrometres (objects, files, job files, user parameters);
algorithms work in voxels.  A voxel size is a ``(z, y, x)`` tuple in micrometres.
Every conversion between the two is one of these functions: a job reads micrometres
from its job file and converts them here (``um_to_voxels(max_shift_um, voxel_size)``);
a job that writes positions converts them back (:func:`vectors_voxels_to_um`).
Stored poses are converted by :meth:`~spfluo.algorithms.geometry.Poses.from_stored` and
:meth:`~spfluo.algorithms.geometry.Poses.to_stored`.

Conversions are plain float64 products and quotients (``length_um / voxel_size``), so a
value converted here equals the same arithmetic written inline.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "as_voxel_size",
    "um_to_voxels",
    "voxels_to_um",
    "vectors_um_to_voxels",
    "vectors_voxels_to_um",
]


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


def _voxel_length(voxel_size) -> float:
    """One voxel size (micrometres, finite, > 0) as a float."""
    try:
        v = float(voxel_size)
    except (TypeError, ValueError):
        raise ValueError(
            f"voxel_size must be one number in micrometres (the voxel size along the length), "
            f"got {voxel_size!r}"
        ) from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"voxel_size must be finite and > 0 (micrometres), got {voxel_size!r}")
    return v


def _length(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def um_to_voxels(length_um, voxel_size) -> float:
    """A length or shift in micrometres as a number of voxels.

    Parameters
    ----------
    length_um : float
        Length, shift or distance along one axis (or any axis of isotropic voxels),
        micrometres.
    voxel_size : float
        Voxel size along that axis, micrometres (> 0).

    Returns
    -------
    float
        ``length_um / voxel_size`` in voxels (not rounded).
    """
    return _length(length_um, "length_um") / _voxel_length(voxel_size)


def voxels_to_um(length_voxels, voxel_size) -> float:
    """A length or shift in voxels, in micrometres (inverse of :func:`um_to_voxels`).

    Parameters
    ----------
    length_voxels : float
        Length, shift or number of voxels along one axis.
    voxel_size : float
        Voxel size along that axis, micrometres (> 0).

    Returns
    -------
    float
        ``length_voxels * voxel_size`` in micrometres.
    """
    return _length(length_voxels, "length_voxels") * _voxel_length(voxel_size)


def _vectors(value, name: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim < 1 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., 3) in (z, y, x) order, got shape {a.shape}")
    return a


def vectors_um_to_voxels(vectors_um, voxel_size) -> np.ndarray:
    """Positions, shifts or translations ``(z, y, x)`` from micrometres to voxels.

    Parameters
    ----------
    vectors_um : array_like, shape (..., 3)
        ``(z, y, x)`` in micrometres (a position is measured from the centre of voxel 0).
    voxel_size : float or sequence of 3 floats
        ``(z, y, x)`` voxel size in micrometres; a scalar means isotropic.

    Returns
    -------
    ndarray, shape (..., 3), float64
        ``vectors_um / voxel_size`` per axis, in voxels.
    """
    return _vectors(vectors_um, "vectors_um") / as_voxel_size(voxel_size)


def vectors_voxels_to_um(vectors_voxels, voxel_size) -> np.ndarray:
    """Positions, shifts or translations ``(z, y, x)`` from voxels to micrometres.

    Inverse of :func:`vectors_um_to_voxels`.

    Parameters
    ----------
    vectors_voxels : array_like, shape (..., 3)
        ``(z, y, x)`` in voxels.
    voxel_size : float or sequence of 3 floats
        ``(z, y, x)`` voxel size in micrometres; a scalar means isotropic.

    Returns
    -------
    ndarray, shape (..., 3), float64
        ``vectors_voxels * voxel_size`` per axis, in micrometres.
    """
    return _vectors(vectors_voxels, "vectors_voxels") * as_voxel_size(voxel_size)
