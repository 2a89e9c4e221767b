"""Figures of a refinement: convergence per outer iteration and pose changes.

- :func:`convergence_figure`: the energy after each volume update, the median rotation
  change of each pose update (with the search step) and the half-map FSC resolution of each channel,
  against the outer iteration, the exhaustive and continuous phases marked;
- :func:`pose_change_histogram`: the distribution of the particles' rotation changes
  (from the input poses, in the last iteration), drawn by
  :func:`spfluo.viewers.metrics.pose_error_histogram`.

The volume (slices, isosurface) and the half-map FSC are drawn by the generic figures of
:mod:`spfluo.viewers.isosurface`, :mod:`spfluo.viewers.slices` and
:func:`spfluo.viewers.metrics.fsc_figure`.  Pure functions: arrays in,
:class:`matplotlib.figure.Figure` out, no pyplot.  Artists that carry numbers have a
``gid`` (``"energy"``, ``"change"``, ``"resolution:<channel>"``, ``"phase:continuous"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from .metrics import pose_error_histogram

__all__ = ["convergence_figure", "pose_change_histogram", "in_plane_margin_histogram"]

#: Below this change (degrees) the pose-change axis is linear, so that 0 is drawn at 0.
_CHANGE_LINEAR_BELOW = 0.1


def _column(log: Mapping, name: str, n: int | None) -> np.ndarray:
    if name not in log:
        raise ValueError(f"log must have a {name!r} entry (see spfluo.io.read_refine_log), "
                         f"got keys {sorted(log)}")
    a = np.asarray(log[name], dtype=float)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise ValueError(f"log[{name!r}] must be a 1D array of {n} values, got shape {a.shape}")
    return a


def _plain_ticks(axis) -> None:
    """Tick labels written out in full (no offset, no scientific factor)."""
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)


def _resolution_panel(ax, it: np.ndarray, res: np.ndarray, vs: float | None) -> None:
    """Half-map resolution per iteration: in µm (1/voxel on the right) for isotropic voxels."""
    if not (res.shape[1] and np.isfinite(res).any()):
        ax.text(0.5, 0.5, "no half maps (gold standard off)", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_ylabel("half-map resolution")
        return
    in_um = vs is not None
    shown = np.where(res > 0, vs / np.where(res > 0, res, 1.0), np.nan) if in_um else res
    for c in range(res.shape[1]):
        ax.plot(it, shown[:, c], "^-", color=f"C{2 + c}", gid=f"resolution:{c}",
                label=f"channel {c}")
    finite = shown[np.isfinite(shown)]
    if in_um:
        nyquist = 2 * vs
        ax.axhline(nyquist, color="0.5", ls=":", lw=1, gid="nyquist",
                   label=f"Nyquist limit ({nyquist:.3g} µm, 2 voxels)")
        lo, hi = min(finite.min(), nyquist), finite.max()
        # nothing is finer than Nyquist; at least half an octave shown above it
        ax.set_ylim(0.97 * lo, max(hi + 0.08 * (hi - lo), 1.5 * lo))
        ax.set_ylabel("half-map FSC 0.143\nresolution (µm, lower is better)")
        right = ax.secondary_yaxis("right", functions=(lambda r: vs / np.maximum(r, 1e-12),
                                                       lambda f: vs / np.maximum(f, 1e-12)))
        right.set_ylabel("(1/voxel)")
        _plain_ticks(right.yaxis)
    else:
        ax.axhline(0.5, color="0.5", ls=":", lw=1, gid="nyquist", label="Nyquist limit")
        ax.set_ylim(0, 0.52)
        ax.set_ylabel("half-map FSC 0.143\nresolution (1/voxel, higher is better)")
    _plain_ticks(ax.yaxis)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.08, 1), borderaxespad=0)


def _change_panel(ax, it, change, step, phase) -> None:
    """Median rotation change, and the angular step of each exhaustive search."""
    ax.plot(it, change, "s-", color="C1", gid="change",
            label="median rotation change\nof the particles")
    exhaustive = (phase == 0) & np.isfinite(step)
    if exhaustive.any():
        ax.plot(it[exhaustive], step[exhaustive], "_", color="0.35", ms=14, mew=2,
                gid="search_step", label="angular step of the\nexhaustive search")
    ax.set_yscale("symlog", linthresh=_CHANGE_LINEAR_BELOW, linscale=0.5)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("rotation (deg)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.08, 1), borderaxespad=0)


def convergence_figure(log: Mapping, *, voxel_size=None, title=None) -> Figure:
    """Energy, median pose change and half-map resolution per outer iteration.

    Parameters
    ----------
    log : mapping
        ``iteration``, ``phase`` (0 exhaustive, 1 continuous), ``step_deg``,
        ``energy``, ``median_change_deg`` (shape (I,)) and ``resolution`` (shape (I, C),
        cycles per voxel, NaN without half maps), as :func:`spfluo.io.read_refine_log`
        returns them.
    voxel_size : float or tuple of float, (z, y, x) in micrometres, optional
        Isotropic voxel size: the resolution is drawn in µm (1/voxel on the right axis).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Three stacked axes sharing the iteration axis: energy (``gid="energy"``); the
        median rotation change in degrees (``gid="change"``) with the angular step of each
        exhaustive search (``gid="search_step"``), on an axis linear below 0.1 degree and
        logarithmic above (0 is drawn at 0); the half-map resolution (one line per channel,
        ``gid="resolution:<c>"``, in µm when the voxel size is isotropic, else in cycles per
        voxel; the Nyquist limit ``gid="nyquist"``; a note when there are no half maps).
        Continuous iterations are shaded (``gid="phase:continuous"``).
    """
    if not isinstance(log, Mapping):
        raise ValueError(f"log must be a mapping of columns, got {type(log).__name__}")
    it = _column(log, "iteration", None)
    n = it.shape[0]
    if n == 0:
        raise ValueError("log is empty: the refinement ran no outer iteration")
    phase = _column(log, "phase", n)
    energy = _column(log, "energy", n)
    change = _column(log, "median_change_deg", n)
    step = _column(log, "step_deg", n)
    res = np.asarray(log.get("resolution", np.full((n, 0), np.nan)), dtype=float)
    if res.ndim == 1:
        res = res[:, None]
    if res.shape[0] != n:
        raise ValueError(f"log['resolution'] must have {n} rows, got shape {res.shape}")
    if np.any(change[np.isfinite(change)] < 0):
        raise ValueError("log['median_change_deg'] must hold angles >= 0 degrees")
    vs = None
    if voxel_size is not None:
        v = np.atleast_1d(np.asarray(voxel_size, dtype=float))
        if v.size not in (1, 3) or not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"voxel_size must be positive micrometres, got {voxel_size!r}")
        vs = float(v[0]) if np.allclose(v, v[0]) else None

    fig = Figure(figsize=(9.5, 7.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    cont = phase == 1
    for ax in axes:
        if cont.any():
            lo, hi = it[cont].min() - 0.5, it[cont].max() + 0.5
            ax.axvspan(lo, hi, color="0.9", zorder=0, gid="phase:continuous")
        ax.grid(alpha=0.3)
    ok = np.isfinite(energy)
    axes[0].plot(it[ok], energy[ok], "o-", color="C0", gid="energy")
    axes[0].set_ylabel("energy (ADMM objective)")
    if not ok.any():
        axes[0].text(0.5, 0.5, "no volume update logged", ha="center", va="center",
                     transform=axes[0].transAxes, color="0.4")
    _change_panel(axes[1], it, change, step, phase)
    _resolution_panel(axes[2], it, res, vs)
    axes[2].set_xlabel("outer iteration (shaded: continuous refinement)")
    axes[2].set_xticks(it)
    if title:
        fig.suptitle(title)
    return fig


def pose_change_histogram(changes_deg, *, labels=None, title=None) -> Figure:
    """Histogram of the particles' rotation changes (degrees), medians marked.

    Parameters
    ----------
    changes_deg : array_like, shape (N,), or a list/dict of such arrays
        Rotation changes in degrees (>= 0), e.g. from the input poses and in the last
        iteration (a dict maps labels to series).
    labels : sequence of str, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        :func:`spfluo.viewers.metrics.pose_error_histogram` with the x axis labelled as a
        rotation change.
    """
    fig = pose_error_histogram(changes_deg, labels=labels, title=title)
    fig.axes[0].set_xlabel("rotation change (deg)")
    return fig


def in_plane_margin_histogram(margins_nats, *, threshold: float, title=None) -> Figure:
    """Histogram of the in-plane margins of refined Cn particles (no ground truth needed).

    ``margins_nats`` (N,): how much better each particle's rotation about its symmetry axis
    fits than the best angle of another basin, nats (profile log-likelihood ratio);
    particles below ``threshold`` (a dotted line) are those whose angle their data do not
    determine.  The x axis is logarithmic above 1 nat.
    """
    m = np.asarray(margins_nats, dtype=float)
    m = m[np.isfinite(m)]
    if m.size == 0:
        raise ValueError("margins_nats holds no finite margin")
    low = int(np.sum(m < threshold))
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    top = max(float(m.max()), threshold * 10.0)
    edges = np.concatenate([[min(0.0, float(m.min()))], np.geomspace(1.0, top * 1.05, 30)])
    ax.hist(m, bins=edges, color="tab:green", gid="hist:margins")
    ax.axvline(threshold, color="tab:red", linestyle=":", gid="threshold",
               label=f"{threshold:g} nats: below, the angle is not determined")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("in-plane margin over the best other angle (nats)")
    ax.set_ylabel("particles")
    ax.legend(loc="upper right")
    ax.set_title(title or f"rotation about the symmetry axis: {low} of {m.size} particle(s) "
                          f"not determined")
    return fig
