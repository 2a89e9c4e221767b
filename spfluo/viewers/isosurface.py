"""3D isosurface of a volume beside its orthogonal slices (pure matplotlib function).

The surface comes from :func:`skimage.measure.marching_cubes` with the voxel size as
spacing, so its vertices are in micrometres; it is drawn as a
:class:`mpl_toolkits.mplot3d.art3d.Poly3DCollection` with a simple Lambert shading
(headless, no OpenGL).  Coordinates follow ``spfluo.io.coordinates``: the centre of
voxel ``(k, j, i)`` is at ``(z, y, x) = (k dz, j dy, i dx)`` µm, in the 3D view and in
the slices alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from ._images import as_channel_volume

__all__ = ["isosurface_figure", "isosurface_mesh", "default_level"]

_COLORS = ((0.2, 0.55, 0.9), (0.95, 0.45, 0.2), (0.3, 0.75, 0.35), (0.8, 0.3, 0.7))
_LIGHT = np.array([0.45, -0.35, 0.82])  # (x, y, z), from above and in front


def _as_cz(volume) -> np.ndarray:
    v = as_channel_volume(volume)
    if min(v.shape[1:]) < 2:
        raise ValueError(f"volume must be at least 2 voxels along each axis, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("volume holds NaN or infinite values: clean it (numpy.nan_to_num)")
    return v


def _voxel_size(voxel_size) -> np.ndarray:
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,)).copy()
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(f"voxel_size must be positive, (z, y, x) in micrometres, got "
                         f"{voxel_size!r}")
    return vs


def default_level(volume) -> float:
    """Otsu threshold of a 3D volume: the level that best splits object and background.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)

    Returns
    -------
    float
        The level, strictly between the minimum and the maximum of ``volume``.
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(volume, dtype=np.float32)
    lo, hi = float(v.min()), float(v.max())
    if not hi > lo:
        raise ValueError(f"the volume is constant ({lo:g}): it has no isosurface")
    level = float(threshold_otsu(v))
    if not lo < level < hi:
        level = 0.5 * (lo + hi)
    return level


def isosurface_mesh(volume, voxel_size, *, level=None, max_faces=40000):
    """Triangle mesh of the isosurface of one 3D volume, in micrometres.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
    voxel_size : float or tuple of float, (z, y, x) in micrometres
    level : float, optional
        Intensity of the surface; default :func:`default_level` (Otsu).
    max_faces : int, default 40000
        The marching-cubes step grows (1, 2, ...) until the mesh has at most this many
        triangles (drawing cost).

    Returns
    -------
    vertices : ndarray, shape (V, 3), float64
        Vertex positions ``(x, y, z)`` in micrometres.
    faces : ndarray, shape (F, 3), int
        Vertex indices of each triangle.
    level : float
        The level used.
    """
    from skimage.measure import marching_cubes

    v = _as_cz(volume)
    if v.shape[0] != 1:
        raise ValueError(f"isosurface_mesh takes one channel (Z, Y, X), got shape {v.shape}")
    v = v[0]
    vs = _voxel_size(voxel_size)
    if level is None:
        level = default_level(v)
    level = float(level)
    lo, hi = float(v.min()), float(v.max())
    if not lo < level < hi:
        raise ValueError(f"level {level:g} is outside the intensity range ({lo:g}, {hi:g}) of "
                         "the volume: choose a level between them")
    if int(max_faces) < 1:
        raise ValueError(f"max_faces must be >= 1, got {max_faces}")
    step = max(1, max(v.shape) // 128)
    while True:
        verts, faces, _, _ = marching_cubes(v, level=level, spacing=tuple(vs), step_size=step)
        if len(faces) <= max_faces or step >= max(v.shape) // 2:
            break
        step += 1
    return verts[:, ::-1].astype(np.float64), faces, level


def _shaded_colors(tris: np.ndarray, base) -> np.ndarray:
    """Lambert shading of triangles (F, 3, 3) in (x, y, z): one RGBA per face."""
    n = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)
    light = _LIGHT / np.linalg.norm(_LIGHT)
    intensity = 0.3 + 0.7 * np.abs(n @ light)
    rgb = np.clip(np.asarray(base)[None, :] * intensity[:, None], 0, 1)
    return np.concatenate([rgb, np.ones((len(rgb), 1))], axis=1)


def isosurface_figure(volume, voxel_size, *, level=None, title=None, channel_names=None,
                      max_faces=40000) -> Figure:
    """Isosurface (3D) beside the central XY, XZ and YZ slices, one row per channel.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X) or (C, Z, Y, X)
    voxel_size : float or tuple of float, (z, y, x) in micrometres
    level : float or sequence of float, optional
        Isosurface level per channel (one value for all); default the Otsu threshold of
        each channel (:func:`default_level`).
    title : str, optional
    channel_names : sequence of str, optional
    max_faces : int, default 40000
        Triangle budget per channel (see :func:`isosurface_mesh`).

    Returns
    -------
    matplotlib.figure.Figure
        Per channel: a 3D axes with the surface (a ``Poly3DCollection`` with
        ``gid="isosurface:<channel>"``; axes x, y, z in µm, equal aspect), then the
        central slices with the level drawn as a contour (axes in µm).
    """
    v = _as_cz(volume)
    vs = _voxel_size(voxel_size)
    C, Z, Y, X = v.shape
    levels = [None] * C if level is None else list(np.broadcast_to(np.asarray(level, float), (C,)))
    vz, vy, vx = vs
    # constrained layout does not place 3D axes well: a fixed grid with room for labels
    height = 3.8 * C + 0.8
    fig = Figure(figsize=(15, height))
    grid = fig.add_gridspec(C, 4, width_ratios=[1.5, 1, 1, 1], left=0.02, right=0.98,
                            bottom=0.75 / height, top=1 - (0.6 if title else 0.35) / height,
                            wspace=0.35, hspace=0.4)
    ext_xy = (-0.5 * vx, (X - 0.5) * vx, (Y - 0.5) * vy, -0.5 * vy)
    ext_xz = (-0.5 * vx, (X - 0.5) * vx, (Z - 0.5) * vz, -0.5 * vz)
    ext_yz = (-0.5 * vy, (Y - 0.5) * vy, (Z - 0.5) * vz, -0.5 * vz)
    for c in range(C):
        name = (channel_names[c] if channel_names and c < len(channel_names)
                else (f"channel {c}" if C > 1 else ""))
        verts, faces, lev = isosurface_mesh(v[c], vs, level=levels[c], max_faces=max_faces)
        tris = verts[faces]
        ax3 = fig.add_subplot(grid[c, 0], projection="3d")
        coll = Poly3DCollection(tris, facecolors=_shaded_colors(tris, _COLORS[c % len(_COLORS)]),
                                edgecolors="none", linewidths=0)
        coll.set_gid(f"isosurface:{c}")
        ax3.add_collection3d(coll)
        ax3.set_xlim(0, (X - 1) * vx)
        ax3.set_ylim(0, (Y - 1) * vy)
        ax3.set_zlim(0, (Z - 1) * vz)
        ax3.set_box_aspect(((X - 1) * vx, (Y - 1) * vy, (Z - 1) * vz))
        ax3.set_xlabel("x (µm)", fontsize=8)
        ax3.set_ylabel("y (µm)", fontsize=8)
        ax3.set_zlabel("z (µm)", fontsize=8, labelpad=2)
        ax3.tick_params(labelsize=6)
        ax3.set_title(f"{name + ': ' if name else ''}isosurface at {lev:.3g} "
                      f"({len(faces)} faces)", fontsize=9)
        vol = v[c]
        zs, ys, xs = (np.arange(n) * s for n, s in zip((Z, Y, X), vs))
        views = [
            ("XY slice", vol[Z // 2], ext_xy, (xs, ys), ("x (µm)", "y (µm)")),
            ("XZ slice", vol[:, Y // 2, :], ext_xz, (xs, zs), ("x (µm)", "z (µm)")),
            ("YZ slice", vol[:, :, X // 2], ext_yz, (ys, zs), ("y (µm)", "z (µm)")),
        ]
        for k, (label, img, extent, (cx, cy), (xl, yl)) in enumerate(views):
            ax = fig.add_subplot(grid[c, k + 1])
            ax.imshow(img, cmap="gray", extent=extent, interpolation="nearest")
            if img.min() < lev < img.max():
                # voxel (j, i) of the slice is centred at (cx[i], cy[j]), as in imshow above
                cs = ax.contour(cx, cy, img, levels=[lev], colors=["red"], linewidths=0.8)
                cs.set_gid(f"level_contour:{c}:{label}")
            ax.set_title(f"{name + ': ' if name else ''}{label}", fontsize=9)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title)
    return fig
