"""Figures of a known-pose reconstruction: the Fourier coverage of its poses.

The coverage is the kernel ``K(k) = (1/N) sum_i |H(R_i k)|^2`` of the reconstruction
(:meth:`spfluo.algorithms.reconstruct.ReconstructionSums.coverage`): how much signal the
particles, seen through the PSF at their poses, bring at each frequency.  A single
orientation leaves a missing cone along the optical axis; poses spread over the sphere
fill it.  :func:`fourier_coverage_figure` shows central sections of ``log10 K`` and a map
of ``K`` on a sphere of frequencies (:func:`directional_coverage`), which shows the
directions the poses leave poorly measured.

The half-map FSC curve is drawn by :func:`spfluo.viewers.metrics.fsc_figure` and the
isosurface by :func:`spfluo.viewers.isosurface.isosurface_figure` (shared with the
evaluation figures).  Pure functions: arrays in, :class:`matplotlib.figure.Figure` out,
no pyplot.  Frequencies are in cycles per voxel (a top axis or the titles give µm⁻¹ for
isotropic voxels).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from matplotlib.figure import Figure

__all__ = ["directional_coverage", "fourier_coverage_figure"]

#: Floor of the log scale, relative to the maximum of K (decades below it).
_LOG_RANGE = 6.0


def _as_coverage(coverage) -> np.ndarray:
    k = np.asarray(coverage, dtype=np.float32)
    if k.ndim == 3:
        k = k[None]
    if k.ndim != 4 or k.shape[1:] != (k.shape[1],) * 3 or k.shape[1] < 4:
        raise ValueError(
            f"coverage must be a centred cubic spectrum (P, P, P) or (C, P, P, P) with P >= 4, "
            f"got shape {k.shape}"
        )
    if not np.all(np.isfinite(k)) or np.any(k < 0):
        raise ValueError("coverage must be finite and >= 0 (a sum of |OTF|^2)")
    return k


def _check_radius(radius) -> float:
    if not isinstance(radius, (int, float, np.integer, np.floating)) or not 0 < radius <= 0.5:
        raise ValueError(f"radius must be in (0, 0.5] cycles per voxel, got {radius!r}")
    return float(radius)


def directional_coverage(coverage, *, radius: float = 0.2, n_directions=(72, 19)):
    """The coverage on a sphere of frequencies, per direction of a hemisphere.

    Parameters
    ----------
    coverage : ndarray, shape (P, P, P)
        Centred ``K`` (zero frequency at ``P//2``; index ``p`` from the centre is ``p / P``
        cycles per voxel).
    radius : float, default 0.2
        Radius of the sphere, cycles per voxel, in ``(0, 0.5]``.
    n_directions : tuple of 2 int, default (72, 19)
        ``(n_phi1, n_phi2)``: azimuths ``2 pi i / n_phi1`` (from +x towards +y) and
        inclinations ``linspace(0, pi / 2, n_phi2)`` from +z (the optical axis); opposite
        directions are equal (``K`` is even), so a hemisphere suffices.

    Returns
    -------
    phi1 : ndarray, shape (n_phi1,)
        Radians.
    phi2 : ndarray, shape (n_phi2,)
        Radians.
    values : ndarray, shape (n_phi1, n_phi2)
        ``K(radius d)`` with ``d = (sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)`` in
        ``(x, y, z)`` (trilinear interpolation).
    """
    k = _as_coverage(coverage)
    if k.shape[0] != 1:
        raise ValueError(f"coverage must be one channel (P, P, P), got shape {k.shape}")
    radius = _check_radius(radius)
    try:
        n1, n2 = (int(v) for v in n_directions)
    except (TypeError, ValueError):
        raise ValueError(f"n_directions must be two ints >= 2, got {n_directions!r}") from None
    if n1 < 2 or n2 < 2:
        raise ValueError(f"n_directions must be two ints >= 2, got {n_directions!r}")
    p = k.shape[1]
    phi1 = 2 * np.pi * np.arange(n1) / n1
    phi2 = np.linspace(0.0, np.pi / 2, n2)
    g1, g2 = np.meshgrid(phi1, phi2, indexing="ij")
    zyx = np.stack([np.cos(g2), np.sin(g2) * np.sin(g1), np.sin(g2) * np.cos(g1)])
    coords = zyx * (radius * p) + p // 2
    values = scipy.ndimage.map_coordinates(k[0], coords.reshape(3, -1), order=1,
                                           mode="nearest")
    return phi1, phi2, values.reshape(n1, n2).astype(np.float64)


def fourier_coverage_figure(coverage, *, voxel_size=None, radius: float = 0.2, title=None,
                            channel_names=None) -> Figure:
    """Central sections of ``log10 K`` and ``K`` on a sphere of directions, per channel.

    Parameters
    ----------
    coverage : ndarray, shape (P, P, P) or (C, P, P, P)
        Centred Fourier coverage ``K`` per channel (``ReconstructionSums.coverage()``).
    voxel_size : float or tuple of float, (z, y, x) in micrometres, optional
        For the µm⁻¹ value of ``radius`` in the titles (isotropic voxels).
    radius : float, default 0.2
        Radius of the sphere of the directional map, cycles per voxel.
    title : str, optional
    channel_names : sequence of str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One row per channel: the sections ``kx = 0`` (kz against ky), ``ky = 0`` (kz
        against kx) and ``kz = 0`` (ky against kx) of ``log10 K`` (gid
        ``"coverage_section:<c>:<plane>"``, the planes ``"kx=0"``, ``"ky=0"``,
        ``"kz=0"``), the circle of the sphere drawn on them, then ``K`` on that sphere
        relative to its maximum, azimuth against inclination (gid ``"coverage_map:<c>"``):
        dark regions are the directions the poses leave poorly measured.
    """
    k = _as_coverage(coverage)
    radius = _check_radius(radius)
    c_count, p = k.shape[0], k.shape[1]
    vs = None
    if voxel_size is not None:
        arr = np.atleast_1d(np.asarray(voxel_size, dtype=float))
        if arr.size not in (1, 3) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"voxel_size must be positive, (z, y, x) in µm, got {voxel_size!r}")
        if np.allclose(arr, arr[0], rtol=1e-6):
            vs = float(arr[0])
    c = p // 2
    lo_f, hi_f = (-c - 0.5) / p, (p - c - 0.5) / p
    extent = (lo_f, hi_f, lo_f, hi_f)
    fig = Figure(figsize=(14, 3.3 * c_count + 0.6), layout="constrained")
    axes = fig.subplots(c_count, 4, squeeze=False)
    theta = np.linspace(0, 2 * np.pi, 200)
    radius_text = f"{radius:g} cycles/voxel" + (f" = {radius / vs:.3g} µm⁻¹" if vs else "")
    for ch in range(c_count):
        kc = k[ch]
        top = float(kc.max())
        floor = top * 10 ** (-_LOG_RANGE) if top > 0 else 1e-30
        logk = np.log10(np.maximum(kc, floor))
        vmin, vmax = float(logk.min()), float(logk.max()) if top > 0 else 1.0
        sections = [("kx=0", logk[:, :, c], ("ky (1/voxel)", "kz (1/voxel)")),
                    ("ky=0", logk[:, c, :], ("kx (1/voxel)", "kz (1/voxel)")),
                    ("kz=0", logk[c, :, :], ("kx (1/voxel)", "ky (1/voxel)"))]
        name = channel_names[ch] if channel_names and ch < len(channel_names) else f"channel {ch}"
        image = None
        for ax, (plane, img, (xl, yl)) in zip(axes[ch, :3], sections):
            image = ax.imshow(img, cmap="magma", extent=extent, vmin=vmin, vmax=vmax,
                              origin="lower", interpolation="nearest",
                              gid=f"coverage_section:{ch}:{plane}")
            ax.plot(radius * np.cos(theta), radius * np.sin(theta), color="cyan", lw=0.8,
                    ls="--")
            ax.set_title(f"{name}: log10 K, {plane}" if c_count > 1 else f"log10 K, {plane}",
                         fontsize=9)
            ax.set_xlabel(xl, fontsize=8)
            ax.set_ylabel(yl, fontsize=8)
            ax.tick_params(labelsize=7)
        fig.colorbar(image, ax=axes[ch, 2], shrink=0.8, label="log10 K")
        phi1, phi2, values = directional_coverage(kc, radius=radius)
        peak = values.max()
        rel = values / peak if peak > 0 else values
        ax = axes[ch, 3]
        # azimuth (x axis) against inclination (y axis, 0 = optical axis at the top)
        shown = ax.imshow(rel.T, cmap="viridis", vmin=0, vmax=1, aspect="auto",
                          extent=(0, 360, 90 + 45 / len(phi2), -45 / len(phi2)),
                          interpolation="nearest", gid=f"coverage_map:{ch}")
        ax.set_xlabel("azimuth phi1 (deg, from +x)", fontsize=8)
        ax.set_ylabel("inclination phi2 (deg, from +z)", fontsize=8)
        ax.tick_params(labelsize=7)
        ratio = float(rel.min())
        ax.set_title(f"K on the sphere |k| = {radius_text}\nmin/max = {ratio:.2g}", fontsize=9)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="K / max")
    if title:
        fig.suptitle(title)
    return fig
