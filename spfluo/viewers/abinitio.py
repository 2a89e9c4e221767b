"""Figures of an ab initio run: energy per epoch, marginal likelihoods (Eloy et al. 2023 Fig. 3).

Pure matplotlib functions on arrays (no pyplot): they render headless and are tested
without a project.  Angles are shown in degrees; directions follow the project
convention ``d = (sin phi2 cos phi1, sin phi2 sin phi1, cos phi2)`` in ``(x, y, z)``
(azimuth ``phi1``, inclination ``phi2`` from +z).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..algorithms.geometry import direction_angles

__all__ = ["energy_figure", "psi_marginals_figure", "direction_map_figure"]


def _as_1d(values, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1D array, got shape {a.shape}")
    return a


def energy_figure(energies, *, bands=None, seconds=None, method: str = "sgd",
                  title=None) -> Figure:
    """Mean relative energy per epoch, with the band of each epoch and its wall time.

    Parameters
    ----------
    energies : array_like, shape (E,)
        Energy of each epoch (SGD: mean relative energy ``||y^ - h^ R f^||^2 /
        ||y^||^2`` on the OTF support; annealing: energy after each chain).
    bands : array_like of int, shape (E,), optional
        Volume band (voxels across the box) of each epoch: a change marks the end of
        the coarse (downsampled) epochs.
    seconds : array_like, shape (E,), optional
        Wall time of each epoch, drawn as bars on a second axis.
    method : {"sgd", "annealing"}
        Sets the axis labels.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        One axis; the energy line has ``gid="energy"``, the band switches
        ``gid="band_switch"``, the time bars ``gid="epoch_seconds"``.
    """
    e = _as_1d(energies, "energies")
    x = np.arange(1, e.size + 1)
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    if seconds is not None:
        s = _as_1d(seconds, "seconds")
        if s.size != e.size:
            raise ValueError(f"seconds has {s.size} values for {e.size} energies")
        ax_t = ax.twinx()
        ax_t.bar(x, s, color="0.85", width=0.7, gid="epoch_seconds", zorder=0)
        ax_t.set_ylabel("wall time per " + ("epoch" if method == "sgd" else "chain") + " (s)",
                        color="0.4")
        ax_t.tick_params(axis="y", colors="0.4", labelsize=8)
        ax.set_zorder(ax_t.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(x, e, "o-", color="C0", ms=4, gid="energy")
    if bands is not None:
        b = np.asarray(bands)
        if b.shape != e.shape:
            raise ValueError(f"bands has shape {b.shape}, energies {e.shape}: one per epoch")
        for k in np.nonzero(np.diff(b) != 0)[0]:
            ax.axvline(k + 1.5, color="C3", ls="--", lw=1, gid="band_switch",
                       label=f"band {b[k]} -> {b[k + 1]} voxels")
        if np.any(np.diff(b) != 0):
            ax.legend(fontsize=8)
    ax.set_xlabel("epoch" if method == "sgd" else "annealing chain (block-coordinate visit)")
    ax.set_ylabel("mean relative energy" if method == "sgd"
                  else "energy -<b, x>/2 (intensity² per particle)")
    ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def psi_marginals_figure(psi, marginals, *, true_index=None, symmetry: int = 1,
                         split: int = 2, title=None) -> Figure:
    """Marginal likelihood of the in-plane angle, one curve per particle (Eloy et al. 2023 Fig. 3a-b).

    Parameters
    ----------
    psi : array_like, shape (M_psi,)
        In-plane angles of the grid, radians.
    marginals : array_like, shape (N, M_psi)
        Marginal likelihood of each angle for each particle (rows sum to 1).
    true_index : array_like of int, shape (N,), optional
        Grid index of each particle's true angle (in the reconstruction's frame): drawn
        as a vertical bar of the particle's colour.
    symmetry : int, default 1
        Order of Cn: the angles cover ``[0, 360/n)`` degrees.
    split : int, default 2
        Number of panels the particles are shared among (readability).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``split`` axes; curves have ``gid="psi_marginal"``, bars ``gid="true_psi"``.
    """
    p = _as_1d(psi, "psi")
    m = np.asarray(marginals, dtype=float)
    if m.ndim != 2 or m.shape[1] != p.size or m.shape[0] == 0:
        raise ValueError(f"marginals must have shape (N, {p.size}), got {m.shape}")
    if true_index is not None:
        true_index = np.asarray(true_index, dtype=int)
        if true_index.shape != (m.shape[0],) or np.any(true_index < 0) or np.any(
                true_index >= p.size):
            raise ValueError(f"true_index must hold one grid index in [0, {p.size}) per "
                             f"particle ({m.shape[0]}), got shape {true_index.shape}")
    split = max(1, min(int(split), m.shape[0]))
    deg = np.degrees(p)
    order = np.argsort(deg)
    groups = np.array_split(np.arange(m.shape[0]), split)
    fig = Figure(figsize=(8, 2.6 * split + 0.6), layout="constrained")
    axes = fig.subplots(split, 1, squeeze=False)[:, 0]
    cmap = fig.colormaps["tab20"] if hasattr(fig, "colormaps") else None
    for ax, group in zip(axes, groups):
        for k in group:
            color = cmap(k % 20) if cmap is not None else f"C{k % 10}"
            ax.plot(deg[order], m[k, order], color=color, lw=1.2, gid="psi_marginal")
            if true_index is not None:
                ax.axvline(deg[true_index[k]], color=color, lw=1.5, ls=":", gid="true_psi")
        ax.set_xlim(0, 360.0 / max(int(symmetry), 1))
        ax.set_ylabel("marginal likelihood")
        ax.grid(alpha=0.3)
        ax.set_title(f"particles {group[0] + 1}-{group[-1] + 1}", fontsize=9)
    axes[-1].set_xlabel("in-plane angle ψ (deg)" + (f", one C{symmetry} unit"
                                                      if symmetry > 1 else ""))
    fig.suptitle(title or "marginal likelihood of ψ per particle"
                 + (" (dotted: true values)" if true_index is not None else ""))
    return fig


def direction_map_figure(directions, likelihood, *, true_directions=None, resolution: int = 2,
                         title=None) -> Figure:
    """Summed direction likelihoods on a (phi1, phi2) map (Eloy et al. 2023 Fig. 3c).

    Parameters
    ----------
    directions : array_like, shape (M_d, 3)
        Grid directions, unit vectors in ``(x, y, z)``.
    likelihood : array_like, shape (M_d,) or (N, M_d)
        Likelihood of each direction (a stack is summed over particles).
    true_directions : array_like, shape (K, 3), optional
        Directions drawn as crosses (the true values, in the reconstruction's frame).
    resolution : int, default 2
        Pixel size of the map in degrees; each pixel shows the nearest grid direction.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The image has ``gid="direction_map"``, the crosses ``gid="true_directions"``.
    """
    d = np.asarray(directions, dtype=float)
    if d.ndim != 2 or d.shape[1] != 3 or d.shape[0] == 0:
        raise ValueError(f"directions must have shape (M_d, 3), got {d.shape}")
    like = np.asarray(likelihood, dtype=float)
    if like.ndim == 2:
        like = like.sum(axis=0)
    if like.shape != (d.shape[0],):
        raise ValueError(f"likelihood must have shape ({d.shape[0]},) or (N, {d.shape[0]}), "
                         f"got {np.shape(likelihood)}")
    step = max(float(resolution), 0.25)
    phi1 = np.radians(np.arange(0.0, 360.0, step) + step / 2)
    phi2 = np.radians(np.arange(0.0, 180.0, step) + step / 2)
    grid = np.stack(np.broadcast_arrays(
        np.sin(phi2)[:, None] * np.cos(phi1)[None, :],
        np.sin(phi2)[:, None] * np.sin(phi1)[None, :],
        np.cos(phi2)[:, None] * np.ones_like(phi1)[None, :]), axis=-1).reshape(-1, 3)
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    nearest = np.empty(grid.shape[0], dtype=int)
    for start in range(0, grid.shape[0], 4096):
        nearest[start:start + 4096] = np.argmax(grid[start:start + 4096] @ unit.T, axis=1)
    image = like[nearest].reshape(phi2.size, phi1.size)
    fig = Figure(figsize=(8, 4.4), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(image, extent=(0, 360, 180, 0), aspect="auto", cmap="viridis",
                   interpolation="nearest", gid="direction_map")
    fig.colorbar(im, ax=ax, label="summed marginal likelihood")
    if true_directions is not None:
        t = np.asarray(true_directions, dtype=float).reshape(-1, 3)
        a1, a2 = direction_angles(t)
        ax.plot(np.degrees(a1), np.degrees(a2), "x", color="yellow", ms=8, mew=2,
                gid="true_directions", label="true directions")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("azimuth φ1 (deg)")
    ax.set_ylabel("inclination φ2 (deg from +z)")
    ax.set_xlim(0, 360)
    ax.set_ylim(180, 0)
    fig.suptitle(title or "likelihood of the direction d (sum over particles)")
    return fig
