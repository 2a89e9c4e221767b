"""Candidates: normalisation, blob detection on the z-MIP, depth, non-maximum suppression.

**Candidates** (:func:`detect_candidates`): the volume is normalised to noise units
and lightly smoothed.  Blobs of its maximum-intensity projection along z (local maxima
of the scale-normalised Laplacian of Gaussian over scales around the particle radius,
in micrometres) are extended along z (:func:`estimate_depth`: one candidate per peak
of the intensity profile along z, at the centroid of its half-maximum run).  Blobs of
the planes (the lateral Laplacian of Gaussian of the volume smoothed along z, local
maxima in 3D) add the particles that sit next to another one on the projection but at
a different depth.  Every candidate is then centred on the lateral blob maximum of
its plane and its depth re-measured.

**Non-maximum suppression** (:func:`non_maximum_suppression`): detections closer
than half a diameter keep only the best score; the examples are always kept.

Positions are in voxels ``(z, y, x)`` of the image; the particle diameter and the voxel
sizes are in micrometres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from scipy.spatial import cKDTree

from spfluo.algorithms.geometry import as_voxel_size
from spfluo.algorithms.picking._validation import (
    check_diameter,
    check_image,
    check_positive,
)

__all__ = [
    "Candidates",
    "DepthPeaks",
    "normalize_image",
    "detect_candidates",
    "estimate_depth",
    "non_maximum_suppression",
]

# blob detection scales, fractions of radius / sqrt(2) (the LoG optimum of a disk; smaller
# scales put maxima on the wall of hollow particles)
_BLOB_SCALES = (1.0, 1.25, 1.5)
_SMOOTHING = 1.0 / 16.0  # smoothing of the volume, sigma = diameter / 16 (micrometres)


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
    a = check_image(image)
    med = float(np.median(a))
    scale = 1.4826 * float(np.median(np.abs(a - med)))
    spread = float(a.std())
    if scale <= 1e-6 * max(spread, 1e-30):
        scale = spread
    if scale <= 0:
        return np.zeros_like(a)
    return ((a - med) / scale).astype(np.float32)


def smoothed(norm: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """The normalised volume smoothed by a Gaussian of ``diameter / 16`` µm (float32)."""
    return ndi.gaussian_filter(norm, _SMOOTHING * diameter / vs, output=np.float32,
                               mode="nearest")


def round_index(positions: np.ndarray, shape) -> np.ndarray:
    """Nearest voxel indices ``(N, 3)`` of positions, clipped to ``shape``."""
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
    a = check_image(image)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, a.shape, vs)
    p = np.asarray(positions_yx, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"positions_yx must have shape (N, 2) in voxels (y, x), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("positions_yx contains NaN or infinite values; give finite positions")
    rel = float(min_peak)
    if not 0.0 < rel <= 1.0:
        raise ValueError(f"min_peak must be a fraction in (0, 1], got {min_peak!r}")
    vol = smoothed(normalize_image(a), vs, d)
    prof = profiles(vol, p, vs, d)
    rows, peaks = _profile_peaks(prof, vs, d, rel)
    z, fwhm, contrast = peak_stats(prof[rows], peaks, vs, d)
    return DepthPeaks(index=rows, z=z, fwhm_um=fwhm, contrast=contrast)


def profiles(vol: np.ndarray, yx: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """z profiles ``(N, Z)`` at lateral positions, averaged over half a radius."""
    sig = (0.0, *(0.25 * diameter / vs[1:]))
    lat = ndi.gaussian_filter(vol, sig, output=np.float32, mode="nearest")
    idx = round_index(yx, vol.shape[1:])
    return lat[:, idx[:, 0], idx[:, 1]].T.astype(np.float64)


def z_window(vs: np.ndarray, diameter: float) -> int:
    """Half a diameter along z, in voxels (>= 1)."""
    return max(1, int(round(0.5 * diameter / vs[0])))


def _profile_peaks(prof: np.ndarray, vs: np.ndarray, diameter: float, rel: float):
    """Peaks of each profile: local maxima over one diameter, high enough (rows, z index)."""
    n, z_size = prof.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    w = z_window(vs, diameter)
    local_max = ndi.maximum_filter1d(prof, size=2 * w + 1, axis=1, mode="nearest")
    base = np.median(prof, axis=1, keepdims=True)
    top = prof.max(axis=1, keepdims=True)
    peak = (prof >= local_max) & (prof - base >= rel * (top - base))
    peak[:, 1:] &= ~peak[:, :-1]  # a plateau counts once
    main = prof.argmax(axis=1)
    peak[np.arange(n), main] |= ~peak.any(axis=1)  # a flat profile keeps its argmax
    rows, zs = np.nonzero(peak)
    return rows.astype(np.int64), zs.astype(np.int64)


def peak_stats(prof: np.ndarray, peak: np.ndarray, vs: np.ndarray, diameter: float):
    """Centroid (voxels), FWHM (µm) and contrast of the run around ``peak`` in each row."""
    n, z_size = prof.shape
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    w = z_window(vs, diameter)
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


def nearest_peak(prof: np.ndarray, z: np.ndarray, vs: np.ndarray, diameter: float):
    """Index of the profile maximum within half a diameter of ``z`` in each row."""
    w = z_window(vs, diameter)
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
    idx = round_index(positions, blob.shape)
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
    a = check_image(image)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, a.shape, vs)
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ValueError(f"threshold must be a finite number of robust standard deviations, "
                         f"got {threshold!r}")
    md = check_positive(min_distance, "min_distance", "fraction of the diameter")
    vol = smoothed(normalize_image(a), vs, d)
    return candidates_from_volume(vol, vs, d, thr, md)


def _robust_level(values: np.ndarray, threshold: float) -> float:
    """``median + threshold * 1.4826 MAD`` of an array."""
    med = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - med)))
    return med + threshold * max(spread, 1e-12)


def candidates_from_volume(vol, vs, diameter, threshold, min_distance,
                            min_peak: float = 0.25) -> Candidates:
    # 1. blobs of the maximum projection, extended along z (one candidate per z peak)
    mip = vol.max(axis=0)
    resp, scale = _blob_response(mip, vs[1:], diameter / 2)
    ys, xs = _local_maxima(resp, min_distance * diameter / vs[1:],
                           _robust_level(resp, threshold))
    yx = np.stack([ys, xs], axis=1).astype(np.float64)
    prof = profiles(vol, yx, vs, diameter)
    rows, peaks = _profile_peaks(prof, vs, diameter, min_peak)
    z, _, _ = peak_stats(prof[rows], peaks, vs, diameter)
    from_mip = np.stack([z, yx[rows, 0], yx[rows, 1]], axis=1).reshape(-1, 3)
    mip_scale = scale[ys[rows], xs[rows]]
    # 2. blobs of the planes (lateral LoG, z smoothed over a quarter diameter): particles
    # next to each other on the projection but at different depths
    blob = _slab_blob_map(vol, vs, diameter)
    size = (2 * z_window(vs, diameter) + 1,) + tuple(
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
    prof2 = profiles(vol, pos[:, 1:], vs, diameter)
    pos[:, 0], _, _ = peak_stats(prof2, nearest_peak(prof2, pos[:, 0], vs, diameter), vs,
                                  diameter)
    response = blob[tuple(round_index(pos, blob.shape).T)]
    # several seeds may lead to one particle: keep the strongest
    keep = non_maximum_suppression(pos * vs, response, min_distance=min_distance * diameter)
    keep = keep[np.argsort(-response[keep], kind="stable")]
    return Candidates(positions=pos[keep], response=response[keep].astype(np.float32),
                      scale=scales[keep].astype(np.float32))


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
    d = check_positive(min_distance, "min_distance", "same unit as the positions")
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
