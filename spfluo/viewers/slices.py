"""Orthogonal slices and particle grids (pure matplotlib functions on arrays).

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot, so it renders headless; axes are physical, in micrometres.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ._images import as_channel_volume, display_limits, projection_mosaic

__all__ = ["orthoslices_figure", "particles_grid_figure"]


def orthoslices_figure(volume, voxel_size, *, title=None, channel_names=None) -> Figure:
    """Central XY, XZ, YZ slices and maximum projections, one row per channel.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
    voxel_size : tuple of float, (z, y, x) in micrometres
    title : str, optional
    channel_names : list of str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Six panels per channel: slices through the centre (XY at z = Z//2,
        XZ at y = Y//2, YZ at x = X//2), then the same three views as maximum
        projections. Axes in micrometres.
    """
    v = as_channel_volume(volume)
    vz, vy, vx = (float(s) for s in np.broadcast_to(np.asarray(voxel_size, float), (3,)))
    C, Z, Y, X = v.shape
    fig = Figure(figsize=(13, 2.4 * C + 0.6), layout="constrained")
    axes = fig.subplots(C, 6, squeeze=False)
    # voxel k is centred at k * voxel size (as in the picking and isosurface views)
    ext_xy = (-0.5 * vx, (X - 0.5) * vx, (Y - 0.5) * vy, -0.5 * vy)
    ext_xz = (-0.5 * vx, (X - 0.5) * vx, (Z - 0.5) * vz, -0.5 * vz)
    ext_yz = (-0.5 * vy, (Y - 0.5) * vy, (Z - 0.5) * vz, -0.5 * vz)
    for c in range(C):
        vol = v[c]
        views = [
            ("XY slice", vol[Z // 2], ext_xy, ("x (µm)", "y (µm)")),
            ("XZ slice", vol[:, Y // 2, :], ext_xz, ("x (µm)", "z (µm)")),
            ("YZ slice", vol[:, :, X // 2], ext_yz, ("y (µm)", "z (µm)")),
            ("XY max", vol.max(axis=0), ext_xy, ("x (µm)", "y (µm)")),
            ("XZ max", vol.max(axis=1), ext_xz, ("x (µm)", "z (µm)")),
            ("YZ max", vol.max(axis=2), ext_yz, ("y (µm)", "z (µm)")),
        ]
        name = channel_names[c] if channel_names and c < len(channel_names) else f"channel {c}"
        for ax, (label, img, extent, (xl, yl)) in zip(axes[c], views):
            lo, hi = display_limits(img)
            ax.imshow(img, cmap="gray", extent=extent, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(f"{name}: {label}" if C > 1 else label, fontsize=9)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig


def particles_grid_figure(particles, voxel_size, *, max_particles=48, ids=None,
                          title=None) -> Figure:
    """A grid of particles: maximum projection along z (top) and along y (bottom) of each.

    Parameters
    ----------
    particles : sequence of ndarray, each (Z, Y, X) or (C, Z, Y, X)
        The first channel is shown.
    voxel_size : tuple of float, (z, y, x) in micrometres
    max_particles : int
        Show at most this many (the first ones).
    ids : sequence, optional
        Labels drawn above each particle.
    """
    parts = [as_channel_volume(p)[0] for p in list(particles)[:max_particles]]
    if not parts:
        raise ValueError("no particle to show")
    vx = float(np.broadcast_to(np.asarray(voxel_size, float), (3,))[2])
    labels = [str(ids[k]) if ids is not None else f"#{k + 1}" for k in range(len(parts))]
    box = parts[0].shape[2] * vx
    return projection_mosaic(parts, labels, width=1.6,
                             title=f"{title or 'particles'} (top: XY max, bottom: XZ max; "
                                   f"box {box:.2f} µm)")
