"""Figures of quality metrics (pure matplotlib functions on arrays).

- :func:`fsc_figure`: one or several FSC curves, thresholds and the resolution read
  on each, with a second frequency axis in µm⁻¹;
- :func:`conical_fsc_figure`: the resolution per direction (azimuth phi1 x inclination
  phi2) of a conical FSC, and its profile against the inclination;
- :func:`pose_error_histogram`: the distribution of angular pose errors (degrees);
- :func:`orientation_sphere_figure`: where the reference z axis points in each
  particle (Hammer projection of the sphere) and the tilt distribution against the
  uniform one.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
renders headless.  Artists that carry a number (resolution marks, medians) have a
``gid`` so that code and tests can find them (``"resolution:<curve>:<threshold>"``,
``"median:<series>"``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from ..algorithms.geometry import direction_angles
from ..algorithms.metrics import FSCCurve
from ..algorithms.resolution import NYQUIST, read_resolution

__all__ = [
    "fsc_figure",
    "conical_fsc_figure",
    "pose_error_histogram",
    "in_plane_error_figure",
    "orientation_sphere_figure",
    "rotation_axis_directions",
]


# ----------------------------------------------------------------------------- helpers
def _isotropic_voxel(voxel_size) -> float | None:
    """The voxel size in µm if isotropic (a number or an (z, y, x) triple), else None."""
    if voxel_size is None:
        return None
    vs = np.atleast_1d(np.asarray(voxel_size, dtype=float))
    if vs.ndim != 1 or vs.size not in (1, 3) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(f"voxel_size must be a positive number or (z, y, x) in micrometres, "
                         f"got {voxel_size!r}")
    if not np.allclose(vs, vs[0], rtol=1e-6):
        return None
    return float(vs[0])


def _as_curve(curve, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, values) of an FSCCurve-like object or a (frequencies, values) pair."""
    if hasattr(curve, "frequencies") and hasattr(curve, "values"):
        f, v = curve.frequencies, curve.values
    else:
        try:
            f, v = curve
        except (TypeError, ValueError):
            raise ValueError(f"{where} must be an FSCCurve or a (frequencies, values) pair, "
                             f"got {type(curve).__name__}") from None
    f = np.asarray(f, dtype=float)
    v = np.asarray(v, dtype=float)
    if f.ndim != 1 or f.shape != v.shape or f.size < 2:
        raise ValueError(f"{where}: frequencies and values must be 1D arrays of the same length "
                         f">= 2, got shapes {f.shape} and {v.shape}")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(v))):
        raise ValueError(f"{where} holds NaN or infinite values")
    return f, v


def _is_1d_numbers(value) -> bool:
    if hasattr(value, "frequencies"):
        return False
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):  # ragged
        return False
    return arr.ndim == 1 and arr.dtype.kind in "biuf"


def _curve_list(curves, labels) -> list[tuple[str | None, np.ndarray, np.ndarray]]:
    """Normalise the accepted forms of ``curves`` to ``[(label, freqs, values), ...]``."""
    if isinstance(curves, Mapping):
        items = list(curves.items())
        if labels is not None:
            raise ValueError("give labels either as the keys of a dict of curves or as labels=, "
                             "not both")
    else:
        single = hasattr(curves, "frequencies")
        if not single and not isinstance(curves, (list, tuple, np.ndarray)):
            raise ValueError(f"curves must be an FSCCurve, a (frequencies, values) pair, or a "
                             f"list or dict of them, got {type(curves).__name__}")
        if not single:
            single = len(curves) == 2 and all(_is_1d_numbers(c) for c in curves)
        seq = [curves] if single else list(curves)
        if labels is None:
            labels = [None] * len(seq)
        elif isinstance(labels, str):
            labels = [labels]
        if len(labels) != len(seq):
            raise ValueError(f"labels has {len(labels)} entries for {len(seq)} curve(s): give one "
                             "label per curve")
        items = list(zip(labels, seq))
    if not items:
        raise ValueError("no FSC curve to draw: give at least one curve")
    out = []
    for k, (label, curve) in enumerate(items):
        f, v = _as_curve(curve, f"curve {k}" if label is None else f"curve {label!r}")
        out.append((None if label is None else str(label), f, v))
    return out


def _fmt_resolution(freq: float, vs: float | None) -> str:
    text = f"{freq:.3f} 1/voxel"
    return text + (f" ({vs / freq:.3g} µm)" if vs else "")


# ----------------------------------------------------------------------------- FSC
def fsc_figure(curves, *, voxel_size=None, labels=None, thresholds=(0.143, 0.5),
               title=None, cutoff=None, background=None) -> Figure:
    """FSC curve(s) with threshold lines and the resolution read on each curve.

    Parameters
    ----------
    curves : FSCCurve, (frequencies, values) pair, or list/dict of them
        Frequencies in cycles per voxel (0 to 0.5), FSC values in ``[-1, 1]``. A dict
        maps labels to curves.
    voxel_size : float or tuple of float, (z, y, x) in micrometres, optional
        Isotropic voxel size: adds a top axis in µm⁻¹ and the resolutions in µm.
        Anisotropic voxels give no µm axis (an FSC shell has no single length).
    labels : sequence of str, optional
        One label per curve (legend).
    thresholds : sequence of float, default (0.143, 0.5)
        FSC thresholds in (0, 1): each is drawn as a horizontal line and the first
        frequency where a curve falls below it (linearly interpolated, as
        :func:`spfluo.algorithms.resolution.read_resolution`) is marked by a vertical
        line with ``gid="resolution:<curve index>:<threshold>"``, when it is a
        measurement; the legend gives the verdict otherwise ("not reached below Nyquist
        (X µm): sample finer", or beyond the optical cutoff).
    title : str, optional
    cutoff : float, optional
        Optical cutoff of the PSF, cycles per voxel
        (:func:`spfluo.algorithms.resolution.optical_cutoff`): a vertical line
        (``gid="cutoff"``); no resolution is claimed beyond it.  Nyquist is marked
        too (``gid="nyquist"``).
    background : dict of str to curve, optional
        Curves drawn thin and grey for context (e.g. the unmasked FSC), without marks.

    Returns
    -------
    matplotlib.figure.Figure
        One axes: x in cycles per voxel (top axis µm⁻¹ when isotropic), y the FSC.
    """
    items = _curve_list(curves, labels)
    thresholds = [float(t) for t in np.atleast_1d(thresholds)]
    for t in thresholds:
        if not 0 < t < 1:
            raise ValueError(f"thresholds must be in (0, 1), got {t}")
    vs = _isotropic_voxel(voxel_size)
    fig = Figure(figsize=(10.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colors = [f"C{k % 10}" for k in range(len(items))]
    lowest = min(0.0, min(float(v.min()) for _, _, v in items))
    bottom = lowest - 0.05
    styles = ["--", ":", "-."]
    for t_idx, t in enumerate(thresholds):
        ax.axhline(t, color="0.4", lw=0.8, ls=styles[t_idx % 3], gid=f"threshold:{t:g}")
        ax.text(0.005, t, f" {t:g}", va="bottom", ha="left", fontsize=8, color="0.3",
                transform=ax.get_yaxis_transform())
    for b_idx, (label, f, v) in enumerate(_curve_list(background, None)
                                          if background else []):
        ax.plot(f, v, color="0.6", lw=0.9, ls=styles[b_idx % 3], label=label,
                gid=f"background:{b_idx}")
    for k, (label, f, v) in enumerate(items):
        name = label or (f"curve {k + 1}" if len(items) > 1 else "FSC")
        ax.plot(f, v, color=colors[k], lw=1.8, marker="o", ms=2.5, label=name,
                gid=f"curve:{k}")
        curve = FSCCurve(frequencies=f, values=v, counts=np.zeros(f.size, np.int64))
        for t_idx, t in enumerate(thresholds):
            res = read_resolution(curve, threshold=t, voxel_size_um=vs, cutoff_per_voxel=cutoff)
            if res.measured:
                r = res.frequency_per_voxel
                text = f"{name} at {t:g}: {_fmt_resolution(r, vs)}"
                ax.plot([r, r], [bottom, t], color=colors[k], lw=1.0, ls=styles[t_idx % 3],
                        gid=f"resolution:{k}:{t:g}", label=text)
                ax.plot([r], [t], "o", color=colors[k], ms=5, mfc="white")
            else:
                # no measurement: the verdict as text in the legend, no line, no mark
                ax.plot([], [], ls="none", marker="none",
                        label=f"{name} at {t:g}: {res.text()}")
    ax.axvline(NYQUIST, color="0.2", lw=1.2, gid="nyquist",
               label="Nyquist" + (f" ({vs / NYQUIST:.3g} µm)" if vs else " (0.5 1/voxel)"))
    if cutoff is not None and 0 < cutoff <= NYQUIST:
        ax.axvline(cutoff, color="tab:red", lw=1.2, ls="-.", gid="cutoff",
                   label="optical cutoff of the PSF"
                   + (f" ({vs / cutoff:.3g} µm)" if vs else f" ({cutoff:.3f} 1/voxel)"))
    ax.set_xlim(0, max(0.5, max(float(f.max()) for _, f, _ in items)))
    ax.set_ylim(bottom, 1.05)
    ax.set_xlabel("spatial frequency (1/voxel)")
    ax.set_ylabel("FSC")
    ax.grid(alpha=0.3)
    if vs is not None:
        top = ax.secondary_xaxis("top", functions=(lambda x: x / vs, lambda k: k * vs))
        top.set_xlabel("spatial frequency (µm⁻¹)")
    # beside the axes, never over the curves
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- conical FSC
def conical_fsc_figure(resolution, phi1, phi2, *, voxel_size=None, threshold=None,
                       title=None) -> Figure:
    """Resolution per direction of a conical FSC: a (phi1, phi2) map and its tilt profile.

    Parameters
    ----------
    resolution : ndarray, shape (n_phi1, n_phi2)
        Resolution in cycles per voxel in the cone around each direction
        (:attr:`spfluo.algorithms.metrics.ConicalFSC.resolution`).
    phi1 : ndarray, shape (n_phi1,)
        Azimuths in radians (from +x towards +y), increasing.
    phi2 : ndarray, shape (n_phi2,)
        Inclinations from +z (the optical axis) in radians, increasing, in ``[0, pi]``.
    voxel_size : float or tuple of float, (z, y, x) in micrometres, optional
        Isotropic voxel size: the profile panel is then in micrometres.
    threshold : float, optional
        The FSC threshold the map was read at (shown in the title of the map).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Left: the map (x azimuth phi1 in degrees, y inclination phi2 in degrees from the
        optical axis), colour = resolution in 1/voxel. Right: resolution against phi2
        (mean over phi1, and the min-max band), in µm when the voxel size is isotropic
        (smaller is better), else in 1/voxel (higher is better).
    """
    res = np.asarray(resolution, dtype=float)
    p1 = np.asarray(phi1, dtype=float)
    p2 = np.asarray(phi2, dtype=float)
    if res.ndim != 2 or res.size == 0:
        raise ValueError(f"resolution must be a non-empty (n_phi1, n_phi2) map, got shape "
                         f"{res.shape}")
    if p1.shape != (res.shape[0],) or p2.shape != (res.shape[1],):
        raise ValueError(f"phi1 and phi2 must have shapes ({res.shape[0]},) and "
                         f"({res.shape[1]},) to match the map, got {p1.shape} and {p2.shape}")
    if not np.all(np.isfinite(res)) or not np.all(np.isfinite(p1)) or not np.all(np.isfinite(p2)):
        raise ValueError("resolution, phi1 and phi2 must be finite")
    if (p1.size > 1 and np.any(np.diff(p1) <= 0)) or (p2.size > 1 and np.any(np.diff(p2) <= 0)):
        raise ValueError("phi1 and phi2 must be increasing (radians)")
    vs = _isotropic_voxel(voxel_size)
    d1, d2 = np.degrees(p1), np.degrees(p2)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_map, ax_prof = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.7, 1]})
    mesh = ax_map.pcolormesh(d1, d2, res.T, shading="nearest", cmap="viridis",
                             gid="conical_map")
    cbar = fig.colorbar(mesh, ax=ax_map)
    cbar.set_label("resolution (1/voxel, higher is better)")
    ax_map.set_xlabel("azimuth φ1 (deg, from +x)")
    ax_map.set_ylabel("inclination φ2 (deg, from the optical axis z)")
    ax_map.set_title("conical FSC resolution" + (f" at {threshold:g}" if threshold else ""),
                     fontsize=10)

    mean, lo, hi = res.mean(axis=0), res.min(axis=0), res.max(axis=0)
    if vs is not None:
        def conv(f):
            f = np.asarray(f, dtype=float)
            return np.divide(vs, f, out=np.full_like(f, np.nan), where=f > 0)
        mean_p, lo_p, hi_p = conv(mean), conv(hi), conv(lo)
        ylabel = "resolution (µm, smaller is better)"
    else:
        mean_p, lo_p, hi_p = mean, lo, hi
        ylabel = "resolution (1/voxel)"
    ax_prof.fill_between(d2, lo_p, hi_p, color="C0", alpha=0.25, label="min-max over φ1")
    ax_prof.plot(d2, mean_p, "o-", color="C0", label="mean over φ1", gid="conical_profile")
    ax_prof.set_xlabel("inclination φ2 (deg; 0 = axial, 90 = lateral)")
    ax_prof.set_ylabel(ylabel)
    ax_prof.grid(alpha=0.3)
    ax_prof.legend(fontsize=8)
    best, worst = float(res.max()), float(res.min())
    summary = f"best {_fmt_resolution(best, vs)}\nworst {_fmt_resolution(worst, vs)}"
    ax_prof.set_title(summary, fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- pose errors
def pose_error_histogram(errors_deg, *, labels=None, bins=30, max_angle=None,
                         title=None) -> Figure:
    """Histogram of angular pose errors with the median marked.

    Parameters
    ----------
    errors_deg : array_like, shape (N,), or a list/dict of such arrays
        Angular errors in degrees (>= 0), one series or several (a dict maps labels
        to series).
    labels : sequence of str, optional
        One label per series.
    bins : int or array_like, default 30
        Number of equal bins from 0 to ``max_angle``, or the bin edges in degrees.
    max_angle : float, optional
        Upper edge in degrees; default the largest error (at least 1 degree).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Bars per series (``gid="hist:<series>"`` on each bar) and a vertical line at each
        series' median (``gid="median:<series>"``).
    """
    if isinstance(errors_deg, Mapping):
        if labels is not None:
            raise ValueError("give labels either as dict keys or as labels=, not both")
        labels, series = [str(k) for k in errors_deg], list(errors_deg.values())
    else:
        arr = None
        try:
            arr = np.asarray(errors_deg, dtype=float)
        except (TypeError, ValueError):
            pass
        series = [arr] if arr is not None and arr.ndim == 1 else list(errors_deg)
        if labels is None:
            labels = [None] * len(series)
        elif isinstance(labels, str):
            labels = [labels]
    if not series:
        raise ValueError("errors_deg is empty: give at least one series of errors")
    if len(labels) != len(series):
        raise ValueError(f"labels has {len(labels)} entries for {len(series)} series")
    data = []
    for k, s in enumerate(series):
        a = np.asarray(s, dtype=float)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"errors series {k} must be a non-empty 1D array of degrees, got "
                             f"shape {a.shape}")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError(f"errors series {k} must hold finite angles >= 0 degrees")
        data.append(a)
    top = float(max_angle) if max_angle is not None else max(1.0, max(float(a.max()) for a in data))
    if not top > 0:
        raise ValueError(f"max_angle must be > 0 degrees, got {max_angle}")
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        edges = np.linspace(0.0, top, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins given as edges must be an increasing 1D array of >= 2 values")
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for k, (label, a) in enumerate(zip(labels, data)):
        color = f"C{k % 10}"
        name = label or ("errors" if len(data) == 1 else f"series {k + 1}")
        counts, _ = np.histogram(np.clip(a, edges[0], edges[-1]), bins=edges)
        bars = ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=color,
                      alpha=0.55 if len(data) > 1 else 0.8, edgecolor="white", linewidth=0.5,
                      label=f"{name} (n={a.size})")
        for b in bars:
            b.set_gid(f"hist:{k}")
        med = float(np.median(a))
        p90 = float(np.percentile(a, 90))
        ax.axvline(med, color=color, lw=1.5, ls="--", gid=f"median:{k}",
                   label=f"{name}: median {med:.2f}°, 90% below {p90:.2f}°")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("angular error (deg)")
    ax.set_ylabel("particles")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- orientations
def rotation_axis_directions(orientations) -> np.ndarray:
    """Where the reference z axis points in each particle, as unit vectors in (x, y, z).

    Parameters
    ----------
    orientations : array_like, shape (N, 3, 3) or (N, 3)
        zyx-frame pose rotations (``docs/conventions.md``), or directions already in ``(x, y, z)``.

    Returns
    -------
    ndarray, shape (N, 3), float64
        ``R e_z`` written in ``(x, y, z)``: column 0 of the zyx matrix, reversed.
    """
    a = np.asarray(orientations, dtype=float)
    if a.ndim == 3 and a.shape[1:] == (3, 3):
        d = a[:, ::-1, 0]
    elif a.ndim == 2 and a.shape[1] == 3:
        d = a
    else:
        raise ValueError(f"orientations must be rotations (N, 3, 3) or directions (N, 3), got "
                         f"shape {a.shape}")
    if d.shape[0] == 0:
        raise ValueError("orientations is empty: give at least one rotation")
    if not np.all(np.isfinite(d)):
        raise ValueError("orientations holds NaN or infinite values")
    norm = np.linalg.norm(d, axis=1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError("orientations holds a zero direction")
    return d / norm


def _lon_lat(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    phi1, phi2 = direction_angles(directions)
    lon = np.where(phi1 > np.pi, phi1 - 2 * np.pi, phi1)
    return lon, np.pi / 2 - phi2


def orientation_sphere_figure(orientations, *, true=None, labels=("estimated", "true"),
                              bins=18, title=None) -> Figure:
    """Distribution of particle orientations on the sphere.

    Parameters
    ----------
    orientations : array_like, shape (N, 3, 3) or (N, 3)
        zyx-frame pose rotations, or directions in ``(x, y, z)``; each particle is drawn
        where the reference z axis points in it (:func:`rotation_axis_directions`).
    true : array_like, shape (M, 3, 3) or (M, 3), optional
        Orientations to draw on top (e.g. the true poses of simulated particles).
    labels : tuple of 2 str
        Legend of ``orientations`` and ``true``.
    bins : int, default 18
        Bins of the inclination histogram (0 to 180 degrees).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Left: Hammer equal-area projection, longitude = azimuth phi1 (deg, from +x),
        latitude = 90 - inclination phi2 (the top is +z, the optical axis); the points
        have ``gid="orientations"`` (and ``"true_orientations"``). Right: histogram of the
        inclination phi2 against the count expected for uniform orientations
        (``N (cos a - cos b) / 2`` in a bin ``[a, b]``).
    """
    d = rotation_axis_directions(orientations)
    lon, lat = _lon_lat(d)
    fig = Figure(figsize=(11, 4.4), layout="constrained")
    ax_sph = fig.add_subplot(1, 2, 1, projection="hammer")
    ax_sph.scatter(lon, lat, s=14, color="C0", alpha=0.7, label=f"{labels[0]} (n={len(lon)})",
                   gid="orientations")
    if true is not None:
        dt = rotation_axis_directions(true)
        tlon, tlat = _lon_lat(dt)
        ax_sph.scatter(tlon, tlat, s=22, facecolors="none", edgecolors="C3",
                       label=f"{labels[1]} (n={len(tlon)})", gid="true_orientations")
    ax_sph.grid(alpha=0.4)
    ax_sph.tick_params(labelsize=7)
    ax_sph.set_title("reference z axis in each particle (latitude 90° = optical axis +z)",
                     fontsize=9, pad=18)
    ax_sph.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.05, -0.15))

    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    edges = np.linspace(0.0, 180.0, int(bins) + 1)
    incl = np.degrees(np.pi / 2 - lat)
    ax_h = fig.add_subplot(1, 2, 2)
    counts, _ = np.histogram(incl, bins=edges)
    ax_h.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", alpha=0.7,
             edgecolor="white", label=labels[0], gid="inclination_hist")
    rad = np.radians(edges)
    expected = len(incl) * (np.cos(rad[:-1]) - np.cos(rad[1:])) / 2
    centres = 0.5 * (edges[:-1] + edges[1:])
    ax_h.plot(centres, expected, "k--", lw=1.2, label="uniform orientations",
              gid="uniform_expectation")
    ax_h.set_xlim(0, 180)
    ax_h.set_xlabel("inclination φ2 of the reference z axis (deg from +z)")
    ax_h.set_ylabel("particles")
    ax_h.legend(fontsize=8)
    ax_h.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    return fig


def in_plane_error_figure(axis_deg, in_plane_deg, symmetry: int, *, title=None) -> Figure:
    """The pose errors of Cn particles split into the axis and the rotation about it.

    Left: histogram of the axis errors (degrees).  Right: histogram of the signed in-plane
    errors over one period ``[-180/n, 180/n)`` degrees, with the level a uniform spread
    (chance: the rotation about the axis not recovered) would give, and the n-fold mean
    resultant length ``|mean exp(i n psi)|`` in the title (1: recovered, near 0: chance).

    Parameters
    ----------
    axis_deg, in_plane_deg : array_like, shape (N,)
        Errors in degrees (:func:`spfluo.algorithms.geometry.axis_and_in_plane_errors`).
    symmetry : int
        Order n of the symmetry (>= 1).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    axis = np.asarray(axis_deg, dtype=float)
    psi = np.asarray(in_plane_deg, dtype=float)
    if axis.ndim != 1 or axis.shape != psi.shape or axis.size == 0:
        raise ValueError(f"axis_deg and in_plane_deg must be two 1D arrays of the same length, "
                         f"got shapes {axis.shape} and {psi.shape}")
    n = max(1, int(symmetry))
    half = 180.0 / n
    resultant = float(np.abs(np.mean(np.exp(1j * n * np.radians(psi)))))
    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.hist(axis, bins=30, color="tab:blue", gid="hist:axis")
    left.axvline(float(np.median(axis)), color="k", linestyle="--", gid="median:axis",
                 label=f"median {np.median(axis):.2f} deg")
    left.set_xlabel("symmetry axis error (deg)")
    left.set_ylabel("particles")
    left.legend(loc="upper right")
    bins = np.linspace(-half, half, 25)
    right.hist(psi, bins=bins, color="tab:orange", gid="hist:in_plane")
    chance = psi.size / (bins.size - 1)
    right.axhline(chance, color="grey", linestyle=":", gid="chance",
                  label="uniform (not recovered)")
    right.set_xlim(-half, half)
    right.set_xlabel(f"error about the axis, modulo {360.0 / n:g} deg (deg)")
    right.set_ylabel("particles")
    right.set_title(f"{n}-fold mean resultant length {resultant:.2f}")
    right.legend(loc="upper right")
    fig.suptitle(title or f"pose errors of C{n} particles: axis and rotation about it")
    return fig
