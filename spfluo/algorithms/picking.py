"""Semi-automatic particle detection: candidates, features, a classifier, non-maximum suppression.

The user picks a few particles; the picker finds the others (Fortun et al. 2018 sec. II-B):

1. **Candidates** (:func:`detect_candidates`): the volume is normalised to noise units
   and lightly smoothed.  Blobs of its maximum-intensity projection along z (local maxima
   of the scale-normalised Laplacian of Gaussian over scales around the particle radius,
   in micrometres) are extended along z (:func:`estimate_depth`: one candidate per peak
   of the intensity profile along z, at the centroid of its half-maximum run).  Blobs of
   the planes (the lateral Laplacian of Gaussian of the volume smoothed along z, local
   maxima in 3D) add the particles that sit next to another one on the projection but at
   a different depth.  Every candidate is then centred on the lateral blob maximum of
   its plane and its depth re-measured.
2. **Features** (:func:`particle_features`, :data:`FEATURE_NAMES`, 85 of them): on the
   maximum projection of a slab one diameter thick around the candidate, at five scales,
   the smoothed intensity, gradient magnitude, Laplacian and Hessian eigenvalues;
   structure-tensor coherence and energy; the radial profile (mean and standard
   deviation in 9 rings); statistics inside the particle disk and in the annulus around
   it; angular harmonics of the ring; in 3D, at three scales, the smoothed intensity,
   gradient, Laplacian and Hessian eigenvalues; and the width and contrast of the z
   profile.  Derivatives are in micrometres and scale-normalised (``sigma^k d^k``), so
   the features do not depend on the voxel size.
3. **Classifier** (:func:`score_candidates`): the examples are the positives.  The other
   candidates are not negatives (most are particles that the user did not pick):
   background is found by a nearest-neighbour novelty test against the examples, and a
   classifier is then cross-fitted and retrained on its own votes (self-training) until
   the labels are stable.  Classifiers: random forest (default), RBF support vector
   machine (Fortun et al. 2018) and gradient boosting; ``benchmarks/picking.py`` compares them.
4. **Non-maximum suppression** (:func:`non_maximum_suppression`): detections closer
   than half a diameter keep only the best score; the examples are always kept.

:func:`pick_particles` runs the whole chain on a set of images.  Detection runs on one
channel (the caller chooses it); the coordinates apply to every channel.  Positions are
in voxels ``(z, y, x)`` of the image (algorithms work in voxels); the particle diameter
and the voxel sizes are in micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

from spfluo.algorithms.geometry import as_voxel_size

__all__ = [
    "FEATURE_NAMES",
    "CLASSIFIERS",
    "Candidates",
    "DepthPeaks",
    "ClassifierScores",
    "PickingResult",
    "normalize_image",
    "detect_candidates",
    "estimate_depth",
    "particle_features",
    "make_classifier",
    "score_candidates",
    "non_maximum_suppression",
    "pick_particles",
]

#: Classifier names accepted by :func:`make_classifier` and :func:`pick_particles`.
CLASSIFIERS = ("forest", "svm", "boosting")

# scales (fractions of the particle radius) of the 2D and 3D features
_SCALES_2D = (0.125, 0.25, 0.5, 0.75, 1.0)
_SCALES_3D = (0.25, 0.5, 1.0)
# blob detection scales, fractions of radius / sqrt(2) (the LoG optimum of a disk; smaller
# scales put maxima on the wall of hollow particles)
_BLOB_SCALES = (1.0, 1.25, 1.5)
_N_RINGS = 9  # radial profile: rings of width 1.5 r / 9 out to 1.5 r
_HARMONICS = (1, 2, 3, 4)
_SMOOTHING = 1.0 / 16.0  # smoothing of the volume, sigma = diameter / 16 (micrometres)


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


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Candidates:
    """Blob candidates in one image.

    Attributes
    ----------
    positions : ndarray, shape (N, 3), float64
        Centres ``(z, y, x)`` in voxels of the image (sub-voxel): y, x at the lateral blob
        maximum of the candidate's plane, z from its intensity profile along z.
    response : ndarray, shape (N,), float32
        Lateral blob response at the candidate: scale-normalised Laplacian of Gaussian
        of its plane at the particle scale, in noise units.
    scale : ndarray, shape (N,), float32
        Scale ``sigma`` (micrometres) at which the blob response of the projection
        peaked at the 2D maximum the candidate comes from.
    """

    positions: np.ndarray
    response: np.ndarray
    scale: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.shape[0])


@dataclass(frozen=True)
class DepthPeaks:
    """Peaks of the z profiles at a set of lateral positions.

    Attributes
    ----------
    index : ndarray, shape (K,), int64
        Row of the lateral position (input of :func:`estimate_depth`) of each peak;
        every position has at least one peak, stacked particles several.
    z : ndarray, shape (K,), float64
        Depth of each peak, voxels (sub-voxel centroid).
    fwhm_um : ndarray, shape (K,), float64
        Width of the peak at half maximum, micrometres.
    contrast : ndarray, shape (K,), float64
        Height of the peak above the median of its profile, noise units.
    """

    index: np.ndarray
    z: np.ndarray
    fwhm_um: np.ndarray
    contrast: np.ndarray

    def __len__(self) -> int:
        return int(self.z.shape[0])


@dataclass(frozen=True)
class ClassifierScores:
    """Scores of a set of samples (see :func:`score_candidates`).

    Attributes
    ----------
    scores : ndarray, shape (N,), float64
        Probability that each sample is a particle, in [0, 1], cross-fitted (a trained
        sample is scored by the model of the fold that held it out, the others by the
        mean of the fold models).
    novelty : ndarray, shape (N,), float64
        Novelty ratio of each sample: distance to the nearest examples over the typical
        distance between examples (about 1 for particles like the examples).
    rounds : int
        Number of classification rounds run (0: no background was found and the scores
        come from the novelty ratio alone).
    """

    scores: np.ndarray
    novelty: np.ndarray
    rounds: int


@dataclass(frozen=True)
class PickingResult:
    """Detections in a set of images.

    Attributes
    ----------
    image_index : ndarray, shape (M,), int64
        Index (into the input list) of the image of each detection.
    positions : ndarray, shape (M, 3), float64
        Centres ``(z, y, x)`` in voxels of their image.
    scores : ndarray, shape (M,), float64
        Probability of being a particle, in [0, 1] (decreasing within each image).
    from_example : ndarray, shape (M,), bool
        True where the detection is one of the user's examples (kept whatever its score).
    n_candidates : ndarray, shape (n_images,), int64
        Number of blob candidates per image before classification.
    n_background : int
        Number of candidates that started as background in the novelty test.
    rounds : int
        Classification rounds run (see :class:`ClassifierScores`).
    """

    image_index: np.ndarray
    positions: np.ndarray
    scores: np.ndarray
    from_example: np.ndarray
    n_candidates: np.ndarray
    n_background: int
    rounds: int

    def __len__(self) -> int:
        return int(self.positions.shape[0])


# ----------------------------------------------------------------------------- validation


def _check_image(image, name: str = "image") -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3:
        raise ValueError(f"{name} must be one channel of shape (Z, Y, X), got shape {a.shape}; "
                         "pick the detection channel first")
    if a.size == 0 or min(a.shape) < 1:
        raise ValueError(f"{name} is empty (shape {a.shape}); give a non-empty volume")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite voxels; fix or mask them first")
    return a


def _check_positive(value, name: str, unit: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number ({unit}), got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number ({unit}), got {value!r}")
    return v


def _check_diameter(diameter, shape, vs) -> float:
    d = _check_positive(diameter, "diameter", "micrometres")
    lateral = min(shape[1] * vs[1], shape[2] * vs[2])
    if d > lateral:
        raise ValueError(f"diameter {d:g} µm is larger than the image ({shape[2] * vs[2]:g} x "
                         f"{shape[1] * vs[1]:g} µm in x, y); give the particle diameter in "
                         "micrometres")
    if d / 2 < 1.5 * max(vs[1], vs[2]):
        raise ValueError(f"diameter {d:g} µm spans fewer than 3 voxels of {vs[2]:g} µm; give the "
                         "particle diameter in micrometres (not voxels) or use finer images")
    return d


def _check_positions(positions, name: str, shape=None) -> np.ndarray:
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3) in voxels (z, y, x), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values; give finite positions")
    if shape is not None and p.size:
        upper = np.asarray(shape, dtype=np.float64) - 0.5
        bad = np.flatnonzero(((p < -0.5) | (p > upper)).any(axis=1))
        if bad.size:
            raise ValueError(f"{name} row {int(bad[0])} at (z, y, x) = {p[bad[0]].tolist()} voxels "
                             f"is outside the image of shape {tuple(shape)}; give positions in "
                             "voxels inside the image")
    return p


def _check_seed(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return np.random.default_rng(seed)
    raise ValueError(f"seed must be an int, None or a numpy Generator, got {seed!r}")


# ----------------------------------------------------------------------------- helpers


def normalize_image(image) -> np.ndarray:
    """Express a volume in noise units: ``(image - median) / (1.4826 MAD)``.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        One channel of a field of view.

    Returns
    -------
    ndarray, shape (Z, Y, X), float32
        Background near 0, noise standard deviation near 1 (robust to the sparse
        particles).  A volume without noise uses its standard deviation instead; a
        constant volume gives zeros.
    """
    a = _check_image(image)
    med = float(np.median(a))
    scale = 1.4826 * float(np.median(np.abs(a - med)))
    spread = float(a.std())
    if scale <= 1e-6 * max(spread, 1e-30):
        scale = spread
    if scale <= 0:
        return np.zeros_like(a)
    return ((a - med) / scale).astype(np.float32)


def _smoothed(norm: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    return ndi.gaussian_filter(norm, _SMOOTHING * diameter / vs, output=np.float32,
                               mode="nearest")


def _round_index(positions: np.ndarray, shape) -> np.ndarray:
    idx = np.rint(positions).astype(np.int64)
    return np.clip(idx, 0, np.asarray(shape) - 1)


# ----------------------------------------------------------------------------- candidates


def _blob_response(mip: np.ndarray, vs_yx: np.ndarray, radius: float):
    """Max over scales of ``-sigma^2 LoG`` of the projection; and the argmax scale (µm)."""
    best = np.full(mip.shape, -np.inf, dtype=np.float32)
    best_scale = np.zeros(mip.shape, dtype=np.float32)
    for f in _BLOB_SCALES:
        s_um = f * radius / np.sqrt(2.0)
        sig = s_um / vs_yx
        # second derivatives per voxel, converted to micrometres^-2 along each axis
        dyy = ndi.gaussian_filter(mip, sig, order=(2, 0), output=np.float32, mode="nearest")
        dxx = ndi.gaussian_filter(mip, sig, order=(0, 2), output=np.float32, mode="nearest")
        r = -(s_um**2) * (dyy / vs_yx[0] ** 2 + dxx / vs_yx[1] ** 2)
        better = r > best
        best = np.where(better, r, best)
        best_scale = np.where(better, np.float32(s_um), best_scale)
    return best, best_scale


def _local_maxima(response: np.ndarray, min_distance_vox: np.ndarray, threshold: float):
    size = tuple(int(max(3, 2 * np.floor(m) + 1)) for m in min_distance_vox)
    footprint_max = ndi.maximum_filter(response, size=size, mode="nearest")
    peaks = (response >= footprint_max) & (response > threshold)
    ys, xs = np.nonzero(peaks)
    # plateaus give several maxima: keep one per connected plateau
    if ys.size:
        labels, n = ndi.label(peaks)
        first = ndi.minimum_position(np.arange(1, response.size + 1).reshape(response.shape),
                                     labels, index=np.arange(1, n + 1))
        ys, xs = (np.array(v, dtype=np.int64) for v in zip(*first))
    return ys, xs


def estimate_depth(image, positions_yx, voxel_size, *, diameter: float,
                   min_peak: float = 0.25) -> DepthPeaks:
    """The z of 2D detections, from the intensity profile along z (one or several peaks).

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        One channel of the field of view (raw intensities).
    positions_yx : ndarray, shape (N, 2)
        Lateral positions ``(y, x)`` in voxels.
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter in micrometres.
    min_peak : float, default 0.25
        A secondary peak of a profile counts when its height above the profile's median
        is at least this fraction of the main peak's.

    Returns
    -------
    DepthPeaks
        One entry per peak: particles stacked along z at one lateral position (they
        overlap on the projection) give one peak each.

    Notes
    -----
    The profile is the volume (normalised, lightly smoothed) averaged laterally with a
    Gaussian of half the particle radius, at each position.  Its peaks are the local
    maxima over a window of one diameter; the depth of a peak is the centroid, weighted
    by the intensity above its half maximum, of the run above half maximum around it
    (within half a diameter).
    """
    a = _check_image(image)
    vs = as_voxel_size(voxel_size)
    d = _check_diameter(diameter, a.shape, vs)
    p = np.asarray(positions_yx, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"positions_yx must have shape (N, 2) in voxels (y, x), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("positions_yx contains NaN or infinite values; give finite positions")
    rel = float(min_peak)
    if not 0.0 < rel <= 1.0:
        raise ValueError(f"min_peak must be a fraction in (0, 1], got {min_peak!r}")
    vol = _smoothed(normalize_image(a), vs, d)
    prof = _profiles(vol, p, vs, d)
    rows, peaks = _profile_peaks(prof, vs, d, rel)
    z, fwhm, contrast = _peak_stats(prof[rows], peaks, vs, d)
    return DepthPeaks(index=rows, z=z, fwhm_um=fwhm, contrast=contrast)


def _profiles(vol: np.ndarray, yx: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """z profiles ``(N, Z)`` at lateral positions, averaged over half a radius."""
    sig = (0.0, *(0.25 * diameter / vs[1:]))
    lat = ndi.gaussian_filter(vol, sig, output=np.float32, mode="nearest")
    idx = _round_index(yx, vol.shape[1:])
    return lat[:, idx[:, 0], idx[:, 1]].T.astype(np.float64)


def _z_window(vs: np.ndarray, diameter: float) -> int:
    """Half a diameter along z, in voxels (>= 1)."""
    return max(1, int(round(0.5 * diameter / vs[0])))


def _profile_peaks(prof: np.ndarray, vs: np.ndarray, diameter: float, rel: float):
    """Peaks of each profile: local maxima over one diameter, high enough (rows, z index)."""
    n, z_size = prof.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    w = _z_window(vs, diameter)
    local_max = ndi.maximum_filter1d(prof, size=2 * w + 1, axis=1, mode="nearest")
    base = np.median(prof, axis=1, keepdims=True)
    top = prof.max(axis=1, keepdims=True)
    peak = (prof >= local_max) & (prof - base >= rel * (top - base))
    peak[:, 1:] &= ~peak[:, :-1]  # a plateau counts once
    main = prof.argmax(axis=1)
    peak[np.arange(n), main] |= ~peak.any(axis=1)  # a flat profile keeps its argmax
    rows, zs = np.nonzero(peak)
    return rows.astype(np.int64), zs.astype(np.int64)


def _peak_stats(prof: np.ndarray, peak: np.ndarray, vs: np.ndarray, diameter: float):
    """Centroid (voxels), FWHM (µm) and contrast of the run around ``peak`` in each row."""
    n, z_size = prof.shape
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    w = _z_window(vs, diameter)
    rows = np.arange(n)
    zi = np.arange(z_size)
    base = np.median(prof, axis=1)
    top = prof[rows, peak]
    half = base + 0.5 * (top - base)
    window = np.abs(zi[None, :] - peak[:, None]) <= w
    below = ~(prof >= half[:, None]) | ~window
    left = np.where(below & (zi < peak[:, None]), zi, -1).max(axis=1)
    right = np.where(below & (zi > peak[:, None]), zi, z_size).min(axis=1)
    run = (zi > left[:, None]) & (zi < right[:, None])
    weight = np.where(run, prof - half[:, None], 0.0)
    wsum = weight.sum(axis=1)
    z = np.where(wsum > 0, (weight * zi).sum(axis=1) / np.where(wsum > 0, wsum, 1.0), peak)

    def crossing(out, inside):
        # half-maximum crossing between the last voxel out of the run and the first in it
        valid = (out >= 0) & (out < z_size)
        o = np.clip(out, 0, z_size - 1)
        i = np.clip(inside, 0, z_size - 1)
        po, pi = prof[rows, o], prof[rows, i]
        step = np.where(pi != po, pi - po, 1.0)
        frac = np.clip(np.where(pi != po, (half - po) / step, 0.5), 0.0, 1.0)
        return np.where(valid, o + frac * (i - o), np.where(out < 0, -0.5, z_size - 0.5))

    width = crossing(right, right - 1) - crossing(left, left + 1)
    return z.astype(np.float64), width * vs[0], top - base


def _nearest_peak(prof: np.ndarray, z: np.ndarray, vs: np.ndarray, diameter: float):
    """Index of the profile maximum within half a diameter of ``z`` in each row."""
    w = _z_window(vs, diameter)
    zi = np.arange(prof.shape[1])
    near = np.abs(zi[None, :] - np.rint(z)[:, None]) <= w
    return np.where(near, prof, -np.inf).argmax(axis=1)


def _slab_blob_map(vol: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """Lateral blob response of each plane, ``-sigma^2 (d2/dy2 + d2/dx2)`` at the particle scale.

    Lateral sigma ``r / sqrt(2)``, axial sigma ``diameter / 4`` (micrometres).
    """
    s = 0.5 * diameter / np.sqrt(2.0)
    sig = np.array([0.25 * diameter, s, s]) / vs
    dyy = ndi.gaussian_filter(vol, sig, order=(0, 2, 0), output=np.float32, mode="nearest")
    dxx = ndi.gaussian_filter(vol, sig, order=(0, 0, 2), output=np.float32, mode="nearest")
    return -(s**2) * (dyy / vs[1] ** 2 + dxx / vs[2] ** 2)


def _refine_lateral(blob: np.ndarray, positions: np.ndarray, vs: np.ndarray, diameter: float,
                    reach: float = 0.5):
    """Move each position to the maximum of ``blob`` in its plane within ``reach`` diameters.

    The maximum is refined to sub-voxel precision along y and x by a parabola through it
    and its two neighbours.
    """
    if positions.shape[0] == 0:
        return positions.copy(), np.zeros(0, np.float32)
    half = np.maximum(1, np.floor(reach * diameter / vs[1:])).astype(int)
    oy = np.arange(-half[0], half[0] + 1)
    ox = np.arange(-half[1], half[1] + 1)
    dy, dx = np.meshgrid(oy * vs[1], ox * vs[2], indexing="ij")
    disk = (np.hypot(dy, dx) <= reach * diameter + 1e-9).ravel()
    idx = _round_index(positions, blob.shape)
    padded = np.pad(blob, ((0, 0), (half[0], half[0]), (half[1], half[1])), mode="edge")
    rows = idx[:, 1, None, None] + half[0] + oy[None, :, None]
    cols = idx[:, 2, None, None] + half[1] + ox[None, None, :]
    patches = padded[idx[:, 0, None, None], rows, cols].reshape(len(idx), -1)
    patches = np.where(disk[None, :], patches, -np.inf)
    best = patches.argmax(axis=1)
    by, bx = np.unravel_index(best, (oy.size, ox.size))
    iy = np.clip(idx[:, 1] + oy[by], 0, blob.shape[1] - 1)
    ix = np.clip(idx[:, 2] + ox[bx], 0, blob.shape[2] - 1)
    out = positions.astype(np.float64).copy()
    # sub-voxel: vertex of the parabola through the maximum and its two neighbours
    for axis, centre in ((1, iy), (2, ix)):
        lo = np.maximum(centre - 1, 0)
        hi = np.minimum(centre + 1, blob.shape[axis] - 1)
        at = [idx[:, 0], iy, ix]
        at[axis] = lo
        f_lo = blob[tuple(at)].astype(np.float64)
        at[axis] = hi
        f_hi = blob[tuple(at)].astype(np.float64)
        at[axis] = centre
        f_c = blob[tuple(at)].astype(np.float64)
        curv = f_lo - 2 * f_c + f_hi
        shift = np.where((curv < 0) & (lo < centre) & (hi > centre),
                         0.5 * (f_lo - f_hi) / np.where(curv < 0, curv, -1.0), 0.0)
        out[:, axis] = centre + np.clip(shift, -0.5, 0.5)
    return out, patches[np.arange(len(idx)), best].astype(np.float32)


def detect_candidates(image, voxel_size, *, diameter: float, threshold: float = 3.0,
                      min_distance: float = 0.5) -> Candidates:
    """Blob candidates: multi-scale LoG maxima on the maximum projection along z, then z.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        One channel of the field of view.
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter in micrometres; the blob scales are ``sigma = f r / sqrt(2)``,
        ``f`` in (1, 1.25, 1.5), ``r = diameter / 2`` (smaller scales put maxima on the
        wall of hollow particles).
    threshold : float, default 3.0
        Keep maxima whose response exceeds the median of the response map by
        ``threshold`` robust standard deviations (1.4826 MAD) of that map.  Low on
        purpose: the classifier removes the false candidates.
    min_distance : float, default 0.5
        Minimum lateral distance between 2D maxima, and 3D distance between candidates,
        fraction of the diameter.

    Returns
    -------
    Candidates
        Sorted by decreasing response.

    Notes
    -----
    The volume is normalised to noise units (:func:`normalize_image`) and smoothed with a
    Gaussian of ``diameter / 16`` micrometres before the projection (Fortun et al. 2018 sec. II-B
    picks on the maximum-intensity projection along the optical axis).  Each 2D maximum
    is extended along z (:func:`estimate_depth`): particles stacked along z, which
    overlap on the projection, give one candidate per peak of the z profile.  Each
    candidate then moves, in its plane and within one radius, to the maximum of the
    lateral blob response of the volume smoothed along z over a quarter diameter (the
    projection mixes stacked particles), and its z is re-measured there.
    """
    a = _check_image(image)
    vs = as_voxel_size(voxel_size)
    d = _check_diameter(diameter, a.shape, vs)
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ValueError(f"threshold must be a finite number of robust standard deviations, "
                         f"got {threshold!r}")
    md = _check_positive(min_distance, "min_distance", "fraction of the diameter")
    vol = _smoothed(normalize_image(a), vs, d)
    return _candidates_from_volume(vol, vs, d, thr, md)


def _robust_level(values: np.ndarray, threshold: float) -> float:
    """``median + threshold * 1.4826 MAD`` of an array."""
    med = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - med)))
    return med + threshold * max(spread, 1e-12)


def _candidates_from_volume(vol, vs, diameter, threshold, min_distance,
                            min_peak: float = 0.25) -> Candidates:
    # 1. blobs of the maximum projection, extended along z (one candidate per z peak)
    mip = vol.max(axis=0)
    resp, scale = _blob_response(mip, vs[1:], diameter / 2)
    ys, xs = _local_maxima(resp, min_distance * diameter / vs[1:],
                           _robust_level(resp, threshold))
    yx = np.stack([ys, xs], axis=1).astype(np.float64)
    prof = _profiles(vol, yx, vs, diameter)
    rows, peaks = _profile_peaks(prof, vs, diameter, min_peak)
    z, _, _ = _peak_stats(prof[rows], peaks, vs, diameter)
    from_mip = np.stack([z, yx[rows, 0], yx[rows, 1]], axis=1).reshape(-1, 3)
    mip_scale = scale[ys[rows], xs[rows]]
    # 2. blobs of the planes (lateral LoG, z smoothed over a quarter diameter): particles
    # next to each other on the projection but at different depths
    blob = _slab_blob_map(vol, vs, diameter)
    size = (2 * _z_window(vs, diameter) + 1,) + tuple(
        int(max(3, 2 * np.floor(min_distance * diameter / v) + 1)) for v in vs[1:])
    local = ndi.maximum_filter(blob, size=size, mode="nearest")
    from_planes = np.argwhere((blob >= local) & (blob > _robust_level(blob, threshold)))
    pos = np.concatenate([from_mip, from_planes.astype(np.float64)])
    if pos.shape[0] == 0:
        return Candidates(positions=np.zeros((0, 3)), response=np.zeros(0, np.float32),
                          scale=np.zeros(0, np.float32))
    scales = np.concatenate([mip_scale, np.full(len(from_planes), 0.5 * diameter / np.sqrt(2))])
    pos, response = _refine_lateral(blob, pos, vs, diameter)
    # depth at the refined lateral position (the peak nearest the first estimate)
    prof2 = _profiles(vol, pos[:, 1:], vs, diameter)
    pos[:, 0], _, _ = _peak_stats(prof2, _nearest_peak(prof2, pos[:, 0], vs, diameter), vs,
                                  diameter)
    response = blob[tuple(_round_index(pos, blob.shape).T)]
    # several seeds may lead to one particle: keep the strongest
    keep = non_maximum_suppression(pos * vs, response, min_distance=min_distance * diameter)
    keep = keep[np.argsort(-response[keep], kind="stable")]
    return Candidates(positions=pos[keep], response=response[keep].astype(np.float32),
                      scale=scales[keep].astype(np.float32))


# ----------------------------------------------------------------------------- features


def _hessian2_eig(hyy, hyx, hxx):
    tr = hyy + hxx
    disc = np.sqrt((hyy - hxx) ** 2 + 4 * hyx**2)
    return 0.5 * (tr + disc), 0.5 * (tr - disc)


def _slab_projection(vol: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """Maximum projection along z over a slab of one diameter around every plane."""
    return ndi.maximum_filter1d(vol, size=2 * _z_window(vs, diameter) + 1, axis=0,
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


def _features_from_volume(vol, positions, vs, diameter) -> np.ndarray:
    radius = diameter / 2
    n = positions.shape[0]
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    idx = _round_index(positions, vol.shape)
    slab = _slab_projection(vol, vs, diameter)
    f2 = _projection_features(slab, idx, vs[1:], radius)
    fp = _patch_features(slab, idx, vs[1:], radius)
    del slab
    f3 = _volume_features(vol, idx, vs, radius)
    prof = _profiles(vol, positions[:, 1:], vs, diameter)
    _, fwhm, contrast = _peak_stats(prof, _nearest_peak(prof, positions[:, 0], vs, diameter),
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
    a = _check_image(image)
    vs = as_voxel_size(voxel_size)
    d = _check_diameter(diameter, a.shape, vs)
    p = _check_positions(positions, "positions", a.shape)
    vol = _smoothed(normalize_image(a), vs, d)
    return _features_from_volume(vol, p, vs, d)


# ----------------------------------------------------------------------------- classifier


def make_classifier(method: str = "forest", *, seed: int = 0):
    """An unfitted scikit-learn classifier with ``predict_proba``.

    Parameters
    ----------
    method : {"forest", "svm", "boosting"}
        ``"forest"``: random forest of 100 trees (balanced class weights);
        ``"svm"``: standardised features and an RBF support vector machine (balanced
        class weights) with Platt probabilities fitted on 3-fold decision values (seed
        000 uses SVMs); ``"boosting"``: gradient boosting of 100 depth-3 trees (fit it
        with balanced sample weights, as :func:`score_candidates` does).
    seed : int
        Random state of the estimator.

    Returns
    -------
    sklearn estimator
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    if method == "forest":
        return RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_features="sqrt",
                                      class_weight="balanced", random_state=seed, n_jobs=1)
    if method == "svm":
        svm = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale",
                                                  class_weight="balanced"))
        return CalibratedClassifierCV(svm, method="sigmoid", cv=3, ensemble=False)
    # the classic (single-threaded) implementation: on a few hundred samples the
    # histogram one spends its time in OpenMP synchronisation
    return GradientBoostingClassifier(n_estimators=100, learning_rate=0.1, max_depth=3,
                                      min_samples_leaf=3, subsample=0.8, random_state=seed)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """Sample weights that give both classes the same total weight."""
    classes, counts = np.unique(y, return_counts=True)
    per_class = len(y) / (len(classes) * counts)
    return per_class[np.searchsorted(classes, y)]


def _cross_fit(X, y, g, score_only, *, method, n_folds, seed):
    """Out-of-fold P(y = 1) for the training rows, fold-model mean for ``score_only`` rows."""
    from sklearn.model_selection import StratifiedGroupKFold

    train = ~score_only
    Xt, yt, gt = X[train], y[train], g[train]
    k = int(min(n_folds, np.unique(gt[yt == 1]).size, np.unique(gt[yt == 0]).size))
    raw = np.zeros(X.shape[0])
    oof = np.zeros(Xt.shape[0])
    extra = np.zeros(int(score_only.sum()))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (tr, te) in enumerate(splitter.split(Xt, yt, gt)):
        model = make_classifier(method, seed=(seed + i) % (2**31 - 1))
        if method == "boosting":  # no class_weight option: balanced sample weights
            model.fit(Xt[tr], yt[tr], sample_weight=_balanced_weights(yt[tr]))
        else:
            if method == "svm":  # Platt calibration folds: at most the smaller class
                model.set_params(cv=int(max(2, min(3, np.bincount(yt[tr]).min()))))
            model.fit(Xt[tr], yt[tr])
        col = list(model.classes_).index(1)
        oof[te] = model.predict_proba(Xt[te])[:, col]
        if extra.size:
            extra += model.predict_proba(X[score_only])[:, col] / k
    raw[train] = oof
    raw[score_only] = extra
    return raw


def _novelty(X: np.ndarray, reference: np.ndarray, *, k: int = 3) -> np.ndarray:
    """Distance of each row of ``X`` to its ``k`` nearest reference rows, relative to the
    median leave-one-out distance among the references (features robustly standardised
    over ``X``)."""
    med = np.median(X, axis=0)
    mad = 1.4826 * np.median(np.abs(X - med), axis=0)
    scale = np.where(mad > 1e-9 * (np.abs(med) + 1.0), mad, 1.0)
    Z = (X - med) / scale
    R = Z[reference]
    k = int(min(k, len(R) - 1))
    tree = cKDTree(R)
    loo = tree.query(R, k=k + 1)[0][:, 1:].mean(axis=1)
    dist = tree.query(Z, k=k)[0]
    dist = dist.mean(axis=1) if dist.ndim == 2 else dist
    return dist / max(float(np.median(loo)), 1e-12)


def score_candidates(features, labels, *, groups=None, method: str = "forest",
                     n_folds: int = 5, novelty: float = 2.5, self_training: int = 5,
                     seed=0) -> ClassifierScores:
    """Particle probabilities from a few positives, cross-fitted self-training.

    Parameters
    ----------
    features : ndarray, shape (N, F)
        One row per sample.
    labels : ndarray, shape (N,), int
        1: positive (an example particle, possibly with shifted copies); 0: unlabelled
        (a candidate that may or may not be a particle); -1: only to be scored (never
        trained on).
    groups : ndarray, shape (N,), optional
        Samples of one group (an example and its shifted copies) stay in the same fold;
        the first sample of a positive group stands for it in the novelty test.
        Default: every sample its own group.
    method : {"forest", "svm", "boosting"}
        See :func:`make_classifier`.
    n_folds : int, default 5
        Number of folds (at least 2; at most the number of groups of each class).
    novelty : float, default 2.5
        Unlabelled samples farther from the examples than ``novelty`` times the typical
        distance between examples start as background (see Notes).
    self_training : int, default 5
        Maximum number of classification rounds.
    seed : int or numpy Generator
        Fold assignment and estimators.

    Returns
    -------
    ClassifierScores

    Notes
    -----
    Positives and negatives are both needed to train a classifier, and the user gives
    positives only.  The unlabelled candidates cannot all serve as negatives: most of
    them are particles the user did not pick.  Negatives are therefore found by a
    novelty test (a nearest-neighbour conformal score): in the feature space
    standardised by the median and MAD of all samples, the mean distance of a sample to
    its 3 nearest examples, divided by the median of the same distance among the
    examples (leave one out), is its novelty ratio; debris and noise, unlike every
    example, have ratios far above the particles' (about 1).  Unlabelled samples start
    as background when their ratio is at least ``novelty``, as particles otherwise.
    Then, for at most ``self_training`` rounds, a classifier is cross-fitted on the
    current labels (every sample is scored by a model that did not see it) and every
    unlabelled sample is relabelled by its probability (``>= 0.5``: particle), until
    the labels stop changing: a sample's new label is the vote of its neighbours, so a
    particle that started as background among particles flips, and the reverse.  The
    examples stay positive.  When no sample is novel (every candidate resembles the
    examples), the score is the novelty ratio mapped linearly from 1 (ratio <= 1) to
    0 (ratio >= ``novelty``).
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if X.ndim != 2:
        raise ValueError(f"features must have shape (N, F), got {X.shape}")
    if y.shape != (X.shape[0],) or not np.isin(y, (-1, 0, 1)).all():
        raise ValueError(f"labels must have shape ({X.shape[0]},) with values 1 (positive), "
                         f"0 (unlabelled) or -1 (score only), got shape {y.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("features contain NaN or infinite values; compute them on finite data")
    g = np.arange(X.shape[0]) if groups is None else np.asarray(groups)
    if g.shape != y.shape:
        raise ValueError(f"groups must have shape {y.shape}, got {g.shape}")
    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    pos_idx = np.flatnonzero(y == 1)
    _, first = np.unique(g[pos_idx], return_index=True)
    representatives = pos_idx[first]
    if representatives.size < 3:
        raise ValueError(f"labels must mark at least 3 positive groups (examples), got "
                         f"{representatives.size}; pick more example particles")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    nov = float(novelty)
    if not (np.isfinite(nov) and nov > 1.0):
        raise ValueError(f"novelty must be a ratio > 1, got {novelty!r}")
    if (isinstance(self_training, bool) or not isinstance(self_training, (int, np.integer))
            or self_training < 1):
        raise ValueError(f"self_training must be an integer >= 1, got {self_training!r}")
    rng = _check_seed(seed)
    score_only = y < 0
    unlabelled = y == 0

    ratio = _novelty(X, representatives)
    current = np.where(unlabelled, (ratio < nov).astype(y.dtype), y)
    scores = np.clip((nov - ratio) / (nov - 1.0), 0.0, 1.0)
    scores[y == 1] = 1.0
    rounds = 0
    # every class needs groups in every training fold (the SVM's calibration: 2 samples)
    min_groups = 3 if method == "svm" else 2
    while rounds < int(self_training):
        if min(np.unique(g[current == 1]).size, np.unique(g[current == 0]).size) < min_groups:
            break
        scores = _cross_fit(X, current, g, score_only, method=method, n_folds=int(n_folds),
                            seed=int(rng.integers(2**31 - 1)))
        rounds += 1
        relabelled = np.where(unlabelled, (scores >= 0.5).astype(y.dtype), y)
        if np.array_equal(relabelled, current):
            break
        current = relabelled
    return ClassifierScores(scores=scores, novelty=ratio, rounds=rounds)


# ----------------------------------------------------------------------------- NMS


def non_maximum_suppression(positions, scores, *, min_distance: float, keep=None) -> np.ndarray:
    """Greedy non-maximum suppression.

    Parameters
    ----------
    positions : ndarray, shape (N, D)
        Positions (any unit, e.g. micrometres).
    scores : ndarray, shape (N,)
        Larger is better.
    min_distance : float
        Two kept detections are at least this far apart (same unit as ``positions``),
        except the ones forced by ``keep``.
    keep : ndarray, shape (N,), bool, optional
        Detections kept whatever their neighbours (the user's examples); they suppress
        their neighbours first.

    Returns
    -------
    ndarray, shape (K,), int64
        Indices of the kept detections: forced ones first, then by decreasing score
        (ties by index).
    """
    p = np.asarray(positions, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"positions must have shape (N, D), got {p.shape}")
    if s.shape != (p.shape[0],):
        raise ValueError(f"scores must have shape ({p.shape[0]},), got {s.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(s))):
        raise ValueError("positions and scores must be finite")
    d = _check_positive(min_distance, "min_distance", "same unit as the positions")
    forced = np.zeros(p.shape[0], bool) if keep is None else np.asarray(keep, dtype=bool)
    if forced.shape != s.shape:
        raise ValueError(f"keep must have shape {s.shape}, got {forced.shape}")
    n = p.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pairs = cKDTree(p).query_pairs(d, output_type="ndarray")
    # neighbour lists in CSR form
    both = np.concatenate([pairs, pairs[:, ::-1]]) if pairs.size else np.zeros((0, 2), int)
    both = both[np.argsort(both[:, 0], kind="stable")]
    starts = np.searchsorted(both[:, 0], np.arange(n + 1))
    order = np.lexsort((np.arange(n), -s, ~forced))
    suppressed = np.zeros(n, bool)
    kept = []
    for i in order:
        if suppressed[i] and not forced[i]:
            continue
        kept.append(i)
        suppressed[both[starts[i]:starts[i + 1], 1]] = True
    return np.asarray(kept, dtype=np.int64)


# ----------------------------------------------------------------------------- pipeline


_SHIFTS = np.array([[0, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)


def _training_rows(cpos, ex, vs, diameter, shape, *, augment: bool, first: int):
    """Rows to featurise in one image, with labels (1/0/-1), groups and output flags.

    Returns ``rows (R, 3)``, ``labels (R,)``, ``groups (R,)``, ``candidate (R,)`` (rows that
    can become detections: the candidates and the first copy of each example),
    ``example (R,)`` (the first copy of each example).
    """
    radius = diameter / 2
    ex_pos = ex.copy()
    snapped = np.full(len(ex), -1)
    if len(cpos) and len(ex):
        # an example snaps to the nearest candidate within half a radius (laterally, µm);
        # one candidate cannot stand for two examples: the closest wins
        dist, j = cKDTree(cpos[:, 1:] * vs[1:]).query(ex[:, 1:] * vs[1:])
        taken = set()
        for k in np.argsort(dist, kind="stable"):
            if dist[k] <= radius / 2 and int(j[k]) not in taken:
                snapped[k] = j[k]
                taken.add(int(j[k]))
        ex_pos[snapped >= 0] = cpos[snapped[snapped >= 0]]
    lab = np.zeros(len(cpos), dtype=np.int64)
    if len(ex) and len(cpos):
        near = cKDTree(ex_pos[:, 1:] * vs[1:]).query(cpos[:, 1:] * vs[1:])[0]
        lab[near <= diameter] = -1
    keep = np.ones(len(cpos), bool)
    keep[snapped[snapped >= 0]] = False  # replaced by the example rows
    c_rows, c_lab = cpos[keep], lab[keep]
    shifts = _SHIFTS if augment else _SHIFTS[:1]
    e_rows = (ex_pos[:, None, :] + shifts[None]).reshape(-1, 3)
    e_rows = np.clip(e_rows, 0, np.asarray(shape) - 1)
    e_groups = first + np.repeat(np.arange(len(ex)), len(shifts))
    c_groups = first + len(ex) + np.arange(len(c_rows))
    first_copy = np.zeros(len(e_rows), bool)
    first_copy[:: len(shifts)] = True
    rows = np.concatenate([c_rows, e_rows]).reshape(-1, 3)
    labels = np.concatenate([c_lab, np.ones(len(e_rows), np.int64)])
    groups = np.concatenate([c_groups, e_groups]).astype(np.int64)
    candidate = np.concatenate([np.ones(len(c_rows), bool), first_copy])
    example = np.concatenate([np.zeros(len(c_rows), bool), first_copy])
    return rows, labels, groups, candidate, example


def pick_particles(images: Sequence, examples: Sequence, voxel_size, *, diameter: float,
                   threshold: float = 0.5, method: str = "forest",
                   candidate_threshold: float = 3.0, nms_distance: float = 0.5,
                   novelty: float = 2.5, n_folds: int = 5, augment: bool = True,
                   seed=0) -> PickingResult:
    """Find the particles like the examples in a set of images.

    Parameters
    ----------
    images : sequence of ndarray, each (Z, Y, X)
        The detection channel of each field of view (shapes may differ).
    examples : sequence of ndarray, each (K_i, 3)
        The user's picks in each image, ``(z, y, x)`` in voxels (``K_i`` may be 0); at
        least 3 in all.
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres, shared by the images.
    diameter : float
        Particle diameter in micrometres.
    threshold : float, default 0.5
        Minimum score (estimated probability of being a particle, in [0, 1]).
    method : {"forest", "svm", "boosting"}, default "forest"
        Classifier (:func:`make_classifier`).
    candidate_threshold : float, default 3.0
        Blob detection threshold (:func:`detect_candidates`).
    nms_distance : float, default 0.5
        Non-maximum suppression distance, fraction of the diameter (3D, micrometres):
        two particles, even touching, are farther apart than half a diameter.
    novelty : float, default 2.5
        Novelty ratio above which a candidate starts as background
        (:func:`score_candidates`).
    n_folds : int, default 5
        Cross-fitting folds (:func:`score_candidates`).
    augment : bool, default True
        Add copies of each example shifted by one voxel along y and x as positives.
    seed : int or numpy Generator
        The same seed gives the same detections.

    Returns
    -------
    PickingResult

    Notes
    -----
    An example snaps to the nearest candidate within half a radius (laterally) and
    takes its position (the candidate's centre is found the same way as every other
    candidate's); an example with no candidate nearby is added as a candidate.
    Candidates farther than one diameter from every example are unlabelled; the
    others (neighbours of examples) are only scored.  The classifier
    (:func:`score_candidates`) learns from the examples, the candidates unlike every
    example (background) and its own votes.  Detections are the candidates with
    ``score >= threshold`` and every example, then non-maximum suppression.
    """
    try:
        n_images = len(images)
    except TypeError:
        raise ValueError("images must be a sequence of (Z, Y, X) arrays (one per field of "
                         f"view), got {type(images).__name__}") from None
    if n_images == 0:
        raise ValueError("images is empty; give at least one field of view")
    exs = list(examples)
    if len(exs) != n_images:
        raise ValueError(f"examples must hold one (K, 3) array per image: {n_images} images but "
                         f"{len(exs)} example arrays")
    exs = [_check_positions(e, f"examples[{i}]") for i, e in enumerate(exs)]
    n_examples = sum(len(e) for e in exs)
    if n_examples < 3:
        raise ValueError(f"examples: need at least 3 example picks, got {n_examples}; pick more "
                         "particles (about 10-20 work well)")
    vs = as_voxel_size(voxel_size)
    d = _check_positive(diameter, "diameter", "micrometres")
    thr = float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise ValueError(f"threshold must be a score in [0, 1], got {threshold!r}")
    if method not in CLASSIFIERS:
        raise ValueError(f"method must be one of {', '.join(CLASSIFIERS)}, got {method!r}")
    nms = _check_positive(nms_distance, "nms_distance", "fraction of the diameter")
    cthr = float(candidate_threshold)
    if not np.isfinite(cthr):
        raise ValueError(f"candidate_threshold must be a finite number, got "
                         f"{candidate_threshold!r}")
    nov = float(novelty)
    if not (np.isfinite(nov) and nov > 1.0):
        raise ValueError(f"novelty must be a ratio > 1, got {novelty!r}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    rng = _check_seed(seed)

    feats, labels, groups, owner, pos_list, is_cand, is_ex = ([] for _ in range(7))
    n_candidates = np.zeros(n_images, dtype=np.int64)
    group = 0
    for i in range(n_images):
        # one image at a time: only candidate positions and features are kept
        img = _check_image(images[i], f"images[{i}]")
        _check_diameter(d, img.shape, vs)
        ex = _check_positions(exs[i], f"examples[{i}]", img.shape)
        vol = _smoothed(normalize_image(img), vs, d)
        cands = _candidates_from_volume(vol, vs, d, cthr, 0.5)
        n_candidates[i] = len(cands)
        rows, lab, grp, cand_row, ex_row = _training_rows(
            cands.positions, ex, vs, d, img.shape, augment=bool(augment), first=group)
        group = int(grp.max()) + 1 if grp.size else group
        feats.append(_features_from_volume(vol, rows, vs, d))
        labels.append(lab)
        groups.append(grp)
        owner.append(np.full(len(rows), i))
        pos_list.append(rows)
        is_cand.append(cand_row)
        is_ex.append(ex_row)
        del vol, img
    X = np.concatenate(feats)
    y = np.concatenate(labels)
    g = np.concatenate(groups)
    owner_all = np.concatenate(owner)
    scored = score_candidates(X, y, groups=g, method=method, n_folds=n_folds,
                              novelty=nov, seed=rng)
    positions = np.concatenate(pos_list)
    cand = np.concatenate(is_cand)
    example = np.concatenate(is_ex)

    out_img, out_pos, out_score, out_ex = [], [], [], []
    for i in range(n_images):
        sel = np.flatnonzero(cand & (owner_all == i) & ((scored.scores >= thr) | example))
        kept = sel[non_maximum_suppression(positions[sel] * vs, scored.scores[sel],
                                           min_distance=nms * d, keep=example[sel])]
        kept = kept[np.lexsort((np.arange(kept.size), -scored.scores[kept]))]
        out_img.append(np.full(kept.size, i, dtype=np.int64))
        out_pos.append(positions[kept])
        out_score.append(scored.scores[kept])
        out_ex.append(example[kept])
    return PickingResult(image_index=np.concatenate(out_img),
                         positions=np.concatenate(out_pos).reshape(-1, 3),
                         scores=np.concatenate(out_score), from_example=np.concatenate(out_ex),
                         n_candidates=n_candidates,
                         n_background=int(((y == 0) & (scored.novelty >= nov)).sum()),
                         rounds=scored.rounds)
