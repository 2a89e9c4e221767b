"""Particle features: 85 numbers per candidate, independent of the voxel size.

**Features** (:func:`particle_features`, :data:`FEATURE_NAMES`, 85 of them): on the
maximum projection of a slab one diameter thick around the candidate, at five scales,
the smoothed intensity, gradient magnitude, Laplacian and Hessian eigenvalues;
structure-tensor coherence and energy; the radial profile (mean and standard
deviation in 9 rings); statistics inside the particle disk and in the annulus around
it; angular harmonics of the ring; in 3D, at three scales, the smoothed intensity,
gradient, Laplacian and Hessian eigenvalues; and the width and contrast of the z
profile.  Derivatives are in micrometres and scale-normalised (``sigma^k d^k``), so
the features do not depend on the voxel size.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from spfluo.algorithms.geometry import as_voxel_size
from spfluo.algorithms.picking._validation import (
    check_diameter,
    check_image,
    check_positions,
)
from spfluo.algorithms.picking.candidates import (
    nearest_peak,
    normalize_image,
    peak_stats,
    profiles,
    round_index,
    smoothed,
    z_window,
)

__all__ = ["FEATURE_NAMES", "particle_features"]

# scales (fractions of the particle radius) of the 2D and 3D features
_SCALES_2D = (0.125, 0.25, 0.5, 0.75, 1.0)
_SCALES_3D = (0.25, 0.5, 1.0)
_N_RINGS = 9  # radial profile: rings of width 1.5 r / 9 out to 1.5 r
_HARMONICS = (1, 2, 3, 4)


def _feature_names() -> tuple[str, ...]:
    names = []
    for s in _SCALES_2D:
        names += [f"slab_{k}_s{s:g}" for k in ("intensity", "gradient", "log", "hess1", "hess2")]
    for s in (0.25, 0.5):
        names += [f"slab_coherence_s{s:g}", f"slab_structure_energy_s{s:g}"]
    for k in range(_N_RINGS):
        names += [f"ring{k}_mean", f"ring{k}_std"]
    names += [f"disk_{k}" for k in ("mean", "std", "min", "max", "p10", "p50", "p90",
                                    "skewness", "kurtosis")]
    names += ["annulus_mean", "annulus_std", "annulus_max", "disk_annulus_contrast"]
    names += [f"ring_harmonic{n}" for n in _HARMONICS]
    for s in _SCALES_3D:
        names += [f"vol_{k}_s{s:g}" for k in ("intensity", "gradient", "log", "hess1", "hess2",
                                              "hess3")]
    names += ["zprofile_fwhm_um", "zprofile_contrast", "zprofile_peak_to_mean"]
    return tuple(names)


#: Names of the columns of :func:`particle_features` (85 features).
FEATURE_NAMES = _feature_names()

# Intensity-linear features are divided by the candidate's own intensity (the smoothed
# volume at a quarter radius, in noise units, at least 1) and quadratic ones by its
# square; ratios, widths and the z-profile contrast (the one absolute brightness, in
# noise units) are kept.
_LEVEL = FEATURE_NAMES.index("vol_intensity_s0.25")
_INVARIANT = ("coherence", "skewness", "kurtosis", "harmonic", "fwhm", "zprofile_contrast")
_QUADRATIC = np.array(["structure_energy" in n for n in FEATURE_NAMES])
_LINEAR = np.array([not any(k in n for k in _INVARIANT) for n in FEATURE_NAMES]) & ~_QUADRATIC


# ----------------------------------------------------------------------------- features


def _hessian2_eig(hyy, hyx, hxx):
    tr = hyy + hxx
    disc = np.sqrt((hyy - hxx) ** 2 + 4 * hyx**2)
    return 0.5 * (tr + disc), 0.5 * (tr - disc)


def _slab_projection(vol: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """Maximum projection along z over a slab of one diameter around every plane."""
    return ndi.maximum_filter1d(vol, size=2 * z_window(vs, diameter) + 1, axis=0,
                                mode="nearest")


def _derivatives_at(smooth: np.ndarray, idx: np.ndarray, axes: tuple, spacing: np.ndarray):
    """Value, gradient and Hessian of a smoothed volume at voxels, by central differences.

    ``axes`` are the differentiated axes, ``spacing`` their voxel sizes (micrometres):
    returns ``value (N,)``, ``gradient (N, A)`` and ``hessian (N, A, A)`` per micrometre.
    The volume is smooth on the scale of a voxel (Gaussian-filtered), so second-order
    differences are accurate to a few percent.
    """
    shape = np.asarray(smooth.shape)

    def at(offset):
        j = np.clip(idx + offset, 0, shape - 1)
        return smooth[tuple(j.T)].astype(np.float64)

    n, k = idx.shape[0], len(axes)
    unit = np.eye(idx.shape[1], dtype=np.int64)
    centre = at(0)
    plus = [at(unit[a]) for a in axes]
    minus = [at(-unit[a]) for a in axes]
    grad = np.stack([(p - m) / (2 * h) for p, m, h in zip(plus, minus, spacing)], axis=1)
    hess = np.empty((n, k, k))
    for i, a in enumerate(axes):
        hess[:, i, i] = (plus[i] - 2 * centre + minus[i]) / spacing[i] ** 2
        for j in range(i + 1, k):
            b = axes[j]
            cross = (at(unit[a] + unit[b]) - at(unit[a] - unit[b]) - at(unit[b] - unit[a])
                     + at(-unit[a] - unit[b])) / (4 * spacing[i] * spacing[j])
            hess[:, i, j] = hess[:, j, i] = cross
    return centre, grad, hess


def _projection_features(slab: np.ndarray, idx: np.ndarray, vs_yx: np.ndarray, radius: float):
    """Multi-scale 2D features of the slab projection at ``idx``: (N, 29).

    Per scale: intensity, gradient magnitude, Laplacian and Hessian eigenvalues (scale
    normalised, micrometres); then structure-tensor coherence and energy at two scales.
    """
    out = []
    smoothed = {}
    for f in _SCALES_2D:
        s = f * radius
        sm = ndi.gaussian_filter(slab, (0.0, *(s / vs_yx)), output=np.float32, mode="nearest")
        smoothed[f] = sm
        value, grad, hess = _derivatives_at(sm, idx, (1, 2), vs_yx)
        l1, l2 = _hessian2_eig(hess[:, 0, 0], hess[:, 0, 1], hess[:, 1, 1])
        out += [value, s * np.linalg.norm(grad, axis=1), s**2 * (hess[:, 0, 0] + hess[:, 1, 1]),
                s**2 * l1, s**2 * l2]
    # structure tensor: gradients of the smoothed plane, Gaussian-weighted over 2 sigma
    half, oy, ox, _, _ = _patch_geometry(vs_yx, radius)
    dy, dx = np.meshgrid(oy * vs_yx[0], ox * vs_yx[1], indexing="ij")
    r2 = (dy**2 + dx**2).ravel()
    for f in (0.25, 0.5):
        s = f * radius
        gy, gx = np.gradient(smoothed[f], *vs_yx, axis=(1, 2))
        py, px = (_gather_patches(gr, idx, half, oy, ox) for gr in (gy, gx))
        w = np.exp(-r2 / (2 * (2 * s) ** 2))
        w /= w.sum()
        jyy, jxx, jyx = (py * py) @ w, (px * px) @ w, (py * px) @ w
        m1, m2 = _hessian2_eig(jyy, jyx, jxx)
        energy = m1 + m2
        out += [(m1 - m2) / (energy + 1e-6 / s**2), s**2 * energy]
    return np.stack(out, axis=1)


def _gather_patches(plane_stack: np.ndarray, idx: np.ndarray, half, oy, ox) -> np.ndarray:
    """Lateral patches ``(N, P)`` of a ``(Z, Y, X)`` stack in the plane of each position."""
    padded = np.pad(plane_stack, ((0, 0), (half[0], half[0]), (half[1], half[1])),
                    mode="reflect")
    rows = idx[:, 1, None, None] + half[0] + oy[None, :, None]
    cols = idx[:, 2, None, None] + half[1] + ox[None, None, :]
    return padded[idx[:, 0, None, None], rows, cols].reshape(len(idx), -1).astype(np.float64)


def _patch_geometry(vs_yx: np.ndarray, radius: float):
    half = np.ceil(1.5 * radius / vs_yx).astype(int)
    oy = np.arange(-half[0], half[0] + 1)
    ox = np.arange(-half[1], half[1] + 1)
    dy, dx = np.meshgrid(oy * vs_yx[0], ox * vs_yx[1], indexing="ij")
    rho = np.hypot(dy, dx).ravel() / radius  # in radii
    theta = np.arctan2(dy, dx).ravel()
    return half, oy, ox, rho, theta


def _patch_features(slab: np.ndarray, idx: np.ndarray, vs_yx: np.ndarray, radius: float):
    """Radial profile, disk/annulus statistics and ring harmonics in the slab plane: (N, 39)."""
    half, oy, ox, rho, theta = _patch_geometry(vs_yx, radius)
    patches = _gather_patches(slab, idx, half, oy, ox)

    ring = np.minimum((rho / 1.5 * _N_RINGS).astype(int), _N_RINGS)  # ring index, 9 = outside
    member = np.zeros((rho.size, _N_RINGS))
    inside = ring < _N_RINGS
    member[np.flatnonzero(inside), ring[inside]] = 1.0
    counts = np.maximum(member.sum(axis=0), 1.0)
    mean = patches @ member / counts
    sq = (patches**2) @ member / counts
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    radial = np.empty((len(idx), 2 * _N_RINGS))
    radial[:, 0::2], radial[:, 1::2] = mean, std

    disk = patches[:, rho <= 1.0]
    ann = patches[:, (rho > 1.0) & (rho <= 1.5)]
    dm = disk.mean(axis=1)
    ds = disk.std(axis=1)
    centred = (disk - dm[:, None]) / np.maximum(ds, 1e-6)[:, None]
    p10, p50, p90 = np.percentile(disk, [10, 50, 90], axis=1)
    stats = np.stack([dm, ds, disk.min(axis=1), disk.max(axis=1), p10, p50, p90,
                      (centred**3).mean(axis=1), (centred**4).mean(axis=1) - 3.0,
                      ann.mean(axis=1), ann.std(axis=1), ann.max(axis=1), dm - ann.mean(axis=1)],
                     axis=1)

    band = (rho >= 1.0 / 3.0) & (rho <= 1.0)
    vals = patches[:, band]
    vals = vals - vals.mean(axis=1, keepdims=True)
    norm = np.abs(vals).sum(axis=1) + 1e-9
    harm = np.stack([np.abs(vals @ np.exp(-1j * n * theta[band])) / norm for n in _HARMONICS],
                    axis=1)
    return np.concatenate([radial, stats, harm], axis=1)


def _volume_features(vol: np.ndarray, idx: np.ndarray, vs: np.ndarray, radius: float):
    """3D smoothed intensity, gradient, Laplacian and Hessian eigenvalues: (N, 18)."""
    out = []
    for f in _SCALES_3D:
        s = f * radius
        sm = ndi.gaussian_filter(vol, s / vs, output=np.float32, mode="nearest")
        value, grad, hess = _derivatives_at(sm, idx, (0, 1, 2), vs)
        eig = np.linalg.eigvalsh(hess)[:, ::-1]
        out += [value, s * np.linalg.norm(grad, axis=1), s**2 * np.trace(hess, axis1=1, axis2=2)]
        out += [s**2 * eig[:, k] for k in range(3)]
    return np.stack(out, axis=1)


def features_from_volume(vol, positions, vs, diameter) -> np.ndarray:
    radius = diameter / 2
    n = positions.shape[0]
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    idx = round_index(positions, vol.shape)
    slab = _slab_projection(vol, vs, diameter)
    f2 = _projection_features(slab, idx, vs[1:], radius)
    fp = _patch_features(slab, idx, vs[1:], radius)
    del slab
    f3 = _volume_features(vol, idx, vs, radius)
    prof = profiles(vol, positions[:, 1:], vs, diameter)
    _, fwhm, contrast = peak_stats(prof, nearest_peak(prof, positions[:, 0], vs, diameter),
                                    vs, diameter)
    peak_to_mean = prof.max(axis=1) - prof.mean(axis=1)
    fz = np.stack([fwhm, contrast, peak_to_mean], axis=1)
    feats = np.concatenate([f2, fp, f3, fz], axis=1)
    # brightness: intensity features relative to the candidate's own intensity
    level = np.maximum(feats[:, _LEVEL], 1.0)[:, None]
    feats = np.where(_LINEAR, feats / level, np.where(_QUADRATIC, feats / level**2, feats))
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def particle_features(image, positions, voxel_size, *, diameter: float) -> np.ndarray:
    """Features at particle positions (about 90, Fortun et al. 2018 sec. II-B), one row per position.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        One channel of the field of view (raw intensities; normalised here to noise
        units with :func:`normalize_image`).
    positions : ndarray, shape (N, 3)
        Centres ``(z, y, x)`` in voxels (rounded to the nearest voxel).
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter in micrometres: it sets every scale.

    Returns
    -------
    ndarray, shape (N, 85), float32
        Columns named by :data:`FEATURE_NAMES`: on the maximum projection along z,
        multi-scale intensity, gradient magnitude, Laplacian of Gaussian and Hessian
        eigenvalues (scales 1/8 to 1 radius), structure-tensor coherence and energy, the
        radial profile (mean and standard deviation in 9 rings out to 1.5 radii), local
        statistics in the particle disk (mean, std, min, max, 10/50/90 percentiles,
        skewness, kurtosis) and in the annulus around it, angular harmonics 1-4 of the
        ring; in 3D, intensity, gradient, Laplacian and Hessian eigenvalues at 1/4, 1/2
        and 1 radius; and the FWHM (µm), contrast and peak-to-mean of the z profile.
        Derivatives are scale-normalised in micrometres.
    """
    a = check_image(image)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, a.shape, vs)
    p = check_positions(positions, "positions", a.shape)
    vol = smoothed(normalize_image(a), vs, d)
    return features_from_volume(vol, p, vs, d)
