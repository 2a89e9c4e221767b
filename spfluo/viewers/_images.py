"""Private helpers shared by the figure modules: volumes to show, grey levels, grids."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["as_channel_volume", "display_limits", "projection_grid"]


def as_channel_volume(volume) -> np.ndarray:
    """A volume ``(Z, Y, X)`` or ``(C, Z, Y, X)`` as a non-empty float32 ``(C, Z, Y, X)``."""
    v = np.asarray(volume, dtype=np.float32)
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise ValueError(f"volume must have shape (Z, Y, X) or (C, Z, Y, X), got {v.shape}")
    if v.size == 0:
        raise ValueError("cannot show an empty volume")
    return v


def display_limits(img) -> tuple[float, float]:
    """Grey-level range of an image: its 0.5 and 99.8 percentiles over the finite values
    (``(0, 1)`` when there are none), widened when they are equal."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1e-6)


def projection_grid(n: int, *, width: float) -> tuple[Figure, np.ndarray, int]:
    """A figure for ``n`` particles, up to 8 per row, each an image above another.

    Parameters
    ----------
    n : int
        Number of particles (>= 1).
    width : float
        Width of a column in inches; each particle is ``width`` by ``2 width`` inches.

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : ndarray of Axes, shape (2 nrow, ncol)
        Particle ``k`` uses ``axes[2 r, c]`` (top) and ``axes[2 r + 1, c]`` (bottom), with
        ``r, c = divmod(k, ncol)``; all axes start switched off.
    ncol : int
    """
    ncol = int(min(8, n))
    nrow = int(np.ceil(n / ncol))
    fig = Figure(figsize=(width * ncol, 2 * width * nrow + 0.5), layout="constrained")
    axes = fig.subplots(2 * nrow, ncol, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    return fig, axes, ncol
