"""Candidates: normalisation, blob detection on the z-MIP, depth, non-maximum suppression.

**Candidates** (:func:`detect_candidates`): the volume is lightly smoothed and expressed
in noise units.  Blobs of its maximum-intensity projection along z (local maxima of the
scale-normalised Laplacian of Gaussian over scales around the particle radius, in
micrometres) are extended along z (:func:`estimate_depth`: one candidate per peak of the
intensity profile along z, at the centroid of its half-maximum run).  Blobs of the
planes (the lateral Laplacian of Gaussian of the volume smoothed along z, local maxima
in 3D) add the particles that sit next to another one on the projection but at a
different depth.  Every candidate is then centred on the lateral blob maximum of its
plane and its depth re-measured.

**Fields of any size** (:func:`find_candidates`): the field is read in lateral tiles with
halos (:mod:`spfluo.algorithms.picking.tiles`), twice.  The first pass smooths each tile
and keeps its projection, the local maxima of its blob map and a lattice of samples of
both; the noise level (median and MAD of the image, then of the blob map) comes from
the lattices, which hold every voxel of fields of up to 4 million voxels.  The second
pass measures the depth, refines and scores the seeds of each tile with filters
evaluated only around them (:mod:`spfluo.algorithms.picking.local`).  The seeds are then
put back in the whole-field order before the non-maximum suppression, so that the
candidates do not depend on the tiles.

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
from spfluo.algorithms.picking.local import (
    Region,
    correlate_valid,
    filter_boxes,
    gather,
    gaussian_kernel,
    kernel_radius,
)
from spfluo.algorithms.picking.scales import REACH, blob_pool, picking_sigmas, z_window
from spfluo.algorithms.picking.tiles import (
    DEFAULT_MEMORY_BYTES,
    TileCounter,
    check_field,
    lattice_stride,
    plan_tiles,
    read_region,
)

__all__ = [
    "Candidates",
    "DepthPeaks",
    "NoiseLevel",
    "normalize_image",
    "detect_candidates",
    "estimate_depth",
    "find_candidates",
    "non_maximum_suppression",
]

# blob detection scales, fractions of radius / sqrt(2) (the LoG optimum of a disk; smaller
# scales put maxima on the wall of hollow particles)
_BLOB_SCALES = (1.0, 1.25, 1.5)
_MIN_PEAK = 0.25  # secondary peaks of a z profile, fraction of the main one


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
class NoiseLevel:
    """Background and noise of a field: the image in noise units is
    ``(smoothed image - median) / scale``.

    Attributes
    ----------
    median : float
        Median of the image (its sampled lattice), intensity units.
    scale : float
        Robust noise standard deviation, ``1.4826 MAD`` (the standard deviation for a
        noise-free image); 0 for a constant image.
    """

    median: float
    scale: float


# ----------------------------------------------------------------------------- helpers


def noise_level(samples) -> NoiseLevel:
    """Median and robust standard deviation (1.4826 MAD) of intensity samples.

    A volume without noise (MAD far below the standard deviation) uses its standard
    deviation; a constant one gives a scale of 0.
    """
    a = np.asarray(samples)
    med = float(np.median(a))
    scale = 1.4826 * float(np.median(np.abs(a - med)))
    spread = float(a.std())
    if scale <= 1e-6 * max(spread, 1e-30):
        scale = spread
    return NoiseLevel(median=med, scale=max(scale, 0.0))


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
        constant volume gives zeros.  Median and MAD come from every voxel of volumes
        of up to 4 million voxels, else from a regular lateral lattice of 4 million
        (:func:`spfluo.algorithms.picking.tiles.lattice_stride`).
    """
    a = check_image(image)
    s = lattice_stride(a.shape)
    noise = noise_level(a[:, ::s, ::s])
    if noise.scale <= 0:
        return np.zeros_like(a)
    return ((a - noise.median) / noise.scale).astype(np.float32)


def smooth_tile(data: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """The image smoothed by a Gaussian of ``diameter / 16`` µm (float32, "nearest" border)."""
    return ndi.gaussian_filter(data, picking_sigmas(vs, diameter)["smooth"], output=np.float32,
                               mode="nearest")


def in_noise_units(smooth: np.ndarray, noise: NoiseLevel) -> np.ndarray:
    """``(smooth - median) / scale`` as float32, in place (``smooth`` is float32)."""
    smooth -= noise.median
    smooth /= noise.scale
    return smooth


def round_index(positions: np.ndarray, shape) -> np.ndarray:
    """Nearest voxel indices ``(N, 3)`` of positions, clipped to ``shape``."""
    idx = np.rint(positions).astype(np.int64)
    return np.clip(idx, 0, np.asarray(shape) - 1)


def _robust_level(values: np.ndarray, threshold: float) -> float:
    """``median + threshold * 1.4826 MAD`` of an array."""
    med = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - med)))
    return med + threshold * max(spread, 1e-12)


# ----------------------------------------------------------------------------- filters


def blob_map(smooth: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """Lateral blob response of each plane of a whole tile, float32.

    ``-sigma^2 (d2/dy2 + d2/dx2)`` of the volume smoothed by a Gaussian of lateral sigma
    ``r / sqrt(2)`` and axial sigma ``diameter / 4`` (micrometres); the two derivatives
    share the pass along z, done in place: ``smooth`` (float32) is overwritten.
    """
    sig = picking_sigmas(vs, diameter)["blob"]
    s = 0.5 * diameter / np.sqrt(2.0)
    t = ndi.gaussian_filter1d(smooth, sig[0], axis=0, output=smooth, mode="nearest")
    dyy = ndi.gaussian_filter1d(t, sig[1], axis=1, order=2, output=np.float32, mode="nearest")
    ndi.gaussian_filter1d(dyy, sig[2], axis=2, output=dyy, mode="nearest")
    dxx = ndi.gaussian_filter1d(t, sig[1], axis=1, output=np.float32, mode="nearest")
    del t
    ndi.gaussian_filter1d(dxx, sig[2], axis=2, order=2, output=dxx, mode="nearest")
    dyy *= np.float32(-(s**2) / vs[1] ** 2)
    dxx *= np.float32(-(s**2) / vs[2] ** 2)
    dyy += dxx
    return dyy


def blob_planes(region: Region, centres: np.ndarray, half, vs: np.ndarray,
                diameter: float) -> np.ndarray:
    """The blob map of :func:`blob_map` (of the volume in noise units) evaluated on a lateral
    box ``centre +- half`` in the plane of each centre: ``(N, 2 hy + 1, 2 hx + 1)``."""
    sig = picking_sigmas(vs, diameter)["blob"]
    s = 0.5 * diameter / np.sqrt(2.0)
    kz = gaussian_kernel(sig[0])
    ky, kx = gaussian_kernel(sig[1]), gaussian_kernel(sig[2])
    ky2, kx2 = gaussian_kernel(sig[1], 2), gaussian_kernel(sig[2], 2)
    rz, ry, rx = (kernel_radius(v) for v in sig)
    centres = np.asarray(centres, dtype=np.int64).reshape(-1, 3)
    lengths = (2 * rz + 1, 2 * (half[0] + ry) + 1, 2 * (half[1] + rx) + 1)
    starts = centres - np.array([rz, half[0] + ry, half[1] + rx])
    out = np.empty((len(centres), 2 * half[0] + 1, 2 * half[1] + 1))
    step = max(1, (1 << 21) // int(np.prod(lengths)))
    for k in range(0, len(centres), step):
        t = correlate_valid(gather(region, starts[k:k + step], lengths), kz, axis=1)[:, 0]
        dyy = correlate_valid(correlate_valid(t, ky2, axis=1), kx, axis=2)
        dxx = correlate_valid(correlate_valid(t, ky, axis=1), kx2, axis=2)
        out[k:k + step] = -(s**2) * (dyy / vs[1] ** 2 + dxx / vs[2] ** 2)
    return out


def profiles(region: Region, yx: np.ndarray, vs: np.ndarray, diameter: float) -> np.ndarray:
    """z profiles ``(N, Z)`` at lateral positions (rounded), averaged over half a radius."""
    sig = picking_sigmas(vs, diameter)["profile"]
    idx = round_index(np.asarray(yx, dtype=np.float64).reshape(-1, 2),
                      region.image_shape[1:])
    centres = np.column_stack([np.zeros(len(idx), np.int64), idx])
    boxes = filter_boxes(region, centres, (None, 0, 0),
                         (np.ones(1), gaussian_kernel(sig[1]), gaussian_kernel(sig[2])))
    return boxes[:, :, 0, 0]


def refine_lateral(region: Region, positions: np.ndarray, vs: np.ndarray,
                   diameter: float) -> np.ndarray:
    """Move each position to the blob maximum of its plane within half a diameter.

    The maximum is refined to sub-voxel precision along y and x by a parabola through it
    and its two neighbours.  Returns the positions ``(N, 3)``, z unchanged.
    """
    if positions.shape[0] == 0:
        return positions.copy()
    shape = np.asarray(region.image_shape)
    half = np.maximum(1, np.floor(REACH * diameter / vs[1:])).astype(int)
    oy = np.arange(-half[0], half[0] + 1)
    ox = np.arange(-half[1], half[1] + 1)
    dy, dx = np.meshgrid(oy * vs[1], ox * vs[2], indexing="ij")
    disk = (np.hypot(dy, dx) <= REACH * diameter + 1e-9).ravel()
    idx = round_index(positions, shape)
    m = half + 1  # the box holds the neighbours of the disk's edge
    box = blob_planes(region, idx, m, vs, diameter)
    n = np.arange(len(idx))

    def at(iy, ix):  # blob at the clipped voxels (iy, ix) of each row's plane
        extra = (1,) * (np.ndim(iy) - 1)
        py = np.clip(iy, 0, shape[1] - 1) - (idx[:, 1] - m[0]).reshape((-1,) + extra)
        px = np.clip(ix, 0, shape[2] - 1) - (idx[:, 2] - m[1]).reshape((-1,) + extra)
        return box[n.reshape((-1,) + extra), py, px]

    patches = at(idx[:, 1, None, None] + oy[None, :, None],
                 idx[:, 2, None, None] + ox[None, None, :]).reshape(len(idx), -1)
    patches = np.where(disk[None, :], patches, -np.inf)
    best = patches.argmax(axis=1)
    by, bx = np.unravel_index(best, (oy.size, ox.size))
    iy = np.clip(idx[:, 1] + oy[by], 0, shape[1] - 1)
    ix = np.clip(idx[:, 2] + ox[bx], 0, shape[2] - 1)
    out = positions.astype(np.float64).copy()
    # sub-voxel: vertex of the parabola through the maximum and its two neighbours
    for axis, centre in ((1, iy), (2, ix)):
        lo = np.maximum(centre - 1, 0)
        hi = np.minimum(centre + 1, shape[axis] - 1)
        pick = (lambda c: at(c, ix)) if axis == 1 else (lambda c: at(iy, c))
        f_lo, f_c, f_hi = pick(lo), pick(centre), pick(hi)
        curv = f_lo - 2 * f_c + f_hi
        shift = np.where((curv < 0) & (lo < centre) & (hi > centre),
                         0.5 * (f_lo - f_hi) / np.where(curv < 0, curv, -1.0), 0.0)
        out[:, axis] = centre + np.clip(shift, -0.5, 0.5)
    return out


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
                   min_peak: float = _MIN_PEAK) -> DepthPeaks:
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
    The profile is the volume (lightly smoothed, in noise units) averaged laterally with
    a Gaussian of half the particle radius, at each position.  Its peaks are the local
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
    s = lattice_stride(a.shape)
    noise = noise_level(a[:, ::s, ::s])
    vol = smooth_tile(a, vs, d)
    vol = in_noise_units(vol, noise) if noise.scale > 0 else np.zeros_like(vol)
    prof = profiles(Region(vol, (0, 0, 0), a.shape), p, vs, d)
    rows, peaks = _profile_peaks(prof, vs, d, rel)
    z, fwhm, contrast = peak_stats(prof[rows], peaks, vs, d)
    return DepthPeaks(index=rows, z=z, fwhm_um=fwhm, contrast=contrast)


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



def detect_candidates(image, voxel_size, *, diameter: float, threshold: float = 3.0,
                      min_distance: float = 0.5, memory_bytes: float = DEFAULT_MEMORY_BYTES,
                      tile: int | None = None) -> Candidates:
    """Blob candidates: multi-scale LoG maxima on the maximum projection along z, then z.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X)
        One channel of the field of view: an ndarray, or any array-like read by lateral
        slices (``image[:, y0:y1, x0:x1]``), such as a memory map of a large file.
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
    memory_bytes : float, default 2e9
        Peak memory allowed: the field is read in lateral tiles that fit
        (:func:`~spfluo.algorithms.picking.tiles.plan_tiles`); the result does not depend
        on the tiles.
    tile : int, optional
        Tile core size in voxels (y and x) instead of the largest that fits.

    Returns
    -------
    Candidates
        Sorted by decreasing response.

    Notes
    -----
    The volume is smoothed with a Gaussian of ``diameter / 16`` micrometres and expressed
    in noise units (:func:`normalize_image`) before the projection (Fortun et al. 2018
    sec. II-B picks on the maximum-intensity projection along the optical axis).  Each
    2D maximum is extended along z (:func:`estimate_depth`): particles stacked along z,
    which overlap on the projection, give one candidate per peak of the z profile.  Each
    candidate then moves, in its plane and within one radius, to the maximum of the
    lateral blob response of the volume smoothed along z over a quarter diameter (the
    projection mixes stacked particles), and its z is re-measured there.
    """
    shape = check_field(image)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, shape, vs)
    thr = float(threshold)
    if not np.isfinite(thr):
        raise ValueError(f"threshold must be a finite number of robust standard deviations, "
                         f"got {threshold!r}")
    md = check_positive(min_distance, "min_distance", "fraction of the diameter")
    plan = plan_tiles(shape, vs, d, memory_bytes=memory_bytes, min_distance=md, core=tile)
    return find_candidates(image, plan, vs, d, threshold=thr, min_distance=md)[0]


def pool_lateral(a: np.ndarray, pool: int) -> np.ndarray:
    """Means over ``pool x pool`` lateral blocks, float32 (the last block of a row or column
    of the image may be partial); ``a`` itself for ``pool`` 1."""
    if pool == 1:
        return a
    starts_y, starts_x = np.arange(0, a.shape[1], pool), np.arange(0, a.shape[2], pool)
    out = np.add.reduceat(np.add.reduceat(a, starts_y, axis=1), starts_x, axis=2)
    counts = (np.diff(np.r_[starts_y, a.shape[1]])[:, None]
              * np.diff(np.r_[starts_x, a.shape[2]])[None, :])
    out /= counts.astype(np.float32)
    return out


def _first_pass(field, plan, vs, diameter, min_distance, counter):
    """Projection, local maxima of the (pooled) blob map and noise samples, tile by tile."""
    n_z, n_y, n_x = plan.shape
    pool = blob_pool(vs, diameter)
    vs_pool = vs * np.array([1, pool, pool])
    p_y, p_x = -(-n_y // pool), -(-n_x // pool)
    st, st_b = plan.stride, lattice_stride((n_z, p_y, p_x))
    samples = np.empty((n_z, -(-n_y // st), -(-n_x // st)), np.float32)
    blob_samples = np.empty((n_z, -(-p_y // st_b), -(-p_x // st_b)), np.float32)
    mip = np.empty((n_y, n_x), np.float32)
    size = (2 * z_window(vs, diameter) + 1,) + tuple(
        int(max(3, 2 * np.floor(min_distance * diameter / v) + 1)) for v in vs_pool[1:])
    positions, values = [], []
    planes = np.arange(n_z)

    def lattice(lo, hi, step):
        return np.arange(-(-lo // step) * step, hi, step)

    for tile in plan.tiles:
        region = read_region(field, tile, plan.shape)
        (cy0, cy1, cx0, cx1), ry0, rx0 = tile.core, tile.read[0], tile.read[2]
        core = (slice(None), slice(cy0 - ry0, cy1 - ry0), slice(cx0 - rx0, cx1 - rx0))
        ly, lx = lattice(cy0, cy1, st), lattice(cx0, cx1, st)
        samples[np.ix_(planes, ly // st, lx // st)] = region.data[np.ix_(planes, ly - ry0,
                                                                          lx - rx0)]
        smooth = smooth_tile(region.data, vs, diameter)
        del region
        mip[cy0:cy1, cx0:cx1] = smooth[core].max(axis=0)
        # the blob map on pooled voxels (tiles start on the pooled grid)
        blob = blob_map(pool_lateral(smooth, pool), vs_pool, diameter)
        del smooth
        (j0, j1, i0, i1), oj, oi = (cy0 // pool, -(-cy1 // pool), cx0 // pool,
                                    -(-cx1 // pool)), ry0 // pool, rx0 // pool
        core = (slice(None), slice(j0 - oj, j1 - oj), slice(i0 - oi, i1 - oi))
        is_max = blob >= ndi.maximum_filter(blob, size=size, mode="nearest")
        zz, jj, ii = np.nonzero(is_max[core])
        del is_max
        values.append(blob[core][zz, jj, ii])
        centre = (pool - 1) // 2
        positions.append(np.stack([zz, np.minimum((jj + j0) * pool + centre, n_y - 1),
                                   np.minimum((ii + i0) * pool + centre, n_x - 1)], axis=1))
        ly, lx = lattice(j0, j1, st_b), lattice(i0, i1, st_b)
        blob_samples[np.ix_(planes, ly // st_b, lx // st_b)] = blob[np.ix_(planes, ly - oj,
                                                                           lx - oi)]
        del blob
        counter.done("blobs")
    return mip, np.concatenate(positions), np.concatenate(values), samples, blob_samples


def _second_pass(field, plan, vs, diameter, noise, mip_yx, mip_scale, planes, counter):
    """Depth, lateral refinement and response of the seeds of each tile.

    Returns positions ``(K, 3)``, responses, scales and the keys of the whole-field order.
    """
    shape = plan.shape
    pos_out, resp_out, scale_out, key_out = [], [], [], []
    for tile in plan.tiles:
        cy0, cy1, cx0, cx1 = tile.core

        def inside(y, x):
            return np.flatnonzero((y >= cy0) & (y < cy1) & (x >= cx0) & (x < cx1))

        mi = inside(mip_yx[:, 0], mip_yx[:, 1])
        pi = inside(planes[:, 1], planes[:, 2])
        if mi.size == 0 and pi.size == 0:
            counter.done("seeds")
            continue
        region = read_region(field, tile, shape)
        vol = Region(in_noise_units(smooth_tile(region.data, vs, diameter), noise),
                     region.origin, shape)
        del region
        # the projection's maxima: one seed per peak of their z profile
        prof = profiles(vol, mip_yx[mi], vs, diameter)
        rows, peaks = _profile_peaks(prof, vs, diameter, _MIN_PEAK)
        z, _, _ = peak_stats(prof[rows], peaks, vs, diameter)
        seeds = np.concatenate([np.column_stack([z, mip_yx[mi[rows]]]).reshape(-1, 3),
                                planes[pi].astype(np.float64)])
        keys = np.concatenate([np.column_stack([np.zeros_like(rows), mi[rows], peaks,
                                                np.zeros_like(rows)]).reshape(-1, 4),
                               np.column_stack([np.ones(pi.size, np.int64), planes[pi]])])
        scale_out.append(np.concatenate([mip_scale[mi[rows]],
                                         np.full(pi.size, 0.5 * diameter / np.sqrt(2))]))
        # centred on the blob maximum of the plane, depth re-measured there
        pos = refine_lateral(vol, seeds, vs, diameter)
        prof = profiles(vol, pos[:, 1:], vs, diameter)
        pos[:, 0] = peak_stats(prof, nearest_peak(prof, pos[:, 0], vs, diameter), vs,
                               diameter)[0]
        resp_out.append(blob_planes(vol, round_index(pos, shape), (0, 0), vs,
                                    diameter)[:, 0, 0])
        pos_out.append(pos)
        key_out.append(keys)
        counter.done("seeds")
    if not pos_out:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros((0, 4), np.int64)
    keys = np.concatenate(key_out)
    order = np.lexsort(keys.T[::-1])
    return (np.concatenate(pos_out)[order], np.concatenate(resp_out)[order],
            np.concatenate(scale_out)[order], keys[order])


def find_candidates(field, plan, vs, diameter: float, *, threshold: float = 3.0,
                    min_distance: float = 0.5, counter=None):
    """Candidates of a field read tile by tile (see the module notes), and its noise level.

    Parameters
    ----------
    field : array-like, shape (Z, Y, X)
        One channel (read by lateral slices).
    plan : TilePlan
        Its tiles (:func:`~spfluo.algorithms.picking.tiles.plan_tiles`).
    vs : ndarray, shape (3,)
        Voxel size ``(z, y, x)``, micrometres.
    diameter : float
        Particle diameter, micrometres (checked by the caller).
    threshold, min_distance : float
        As :func:`detect_candidates`.
    counter : TileCounter, optional
        Told of every tile done.

    Returns
    -------
    Candidates
    NoiseLevel
        Of the field: the features of :mod:`~spfluo.algorithms.picking.features` use it.
    """
    counter = counter if counter is not None else TileCounter(len(plan))
    empty = Candidates(positions=np.zeros((0, 3)), response=np.zeros(0, np.float32),
                       scale=np.zeros(0, np.float32))
    mip, maxima, values, samples, blob_samples = _first_pass(field, plan, vs, diameter,
                                                             min_distance, counter)
    noise = noise_level(samples)
    del samples
    if noise.scale <= 0:  # a constant field: nothing to detect
        counter.skip("seeds")
        return empty, noise
    # 1. blobs of the maximum projection (extended along z in the second pass)
    resp, scale = _blob_response(in_noise_units(mip, noise), vs[1:], diameter / 2)
    ys, xs = _local_maxima(resp, min_distance * diameter / vs[1:],
                           _robust_level(resp, threshold))
    mip_yx = np.stack([ys, xs], axis=1).astype(np.int64)
    mip_scale = scale[ys, xs]
    del mip, resp, scale
    # 2. blobs of the planes: particles next to each other on the projection but at
    # different depths, and particles the projection misses (a brighter neighbour above
    # or below); the blob map of the first pass is in intensity units
    planes = maxima[values > _robust_level(blob_samples, threshold)]
    planes = planes[np.lexsort(planes.T[::-1])]
    pos, response, scales, _ = _second_pass(field, plan, vs, diameter, noise, mip_yx,
                                            mip_scale, planes, counter)
    if pos.shape[0] == 0:
        return empty, noise
    # several seeds may lead to one particle: keep the strongest
    keep = non_maximum_suppression(pos * vs, response, min_distance=min_distance * diameter)
    keep = keep[np.argsort(-response[keep], kind="stable")]
    return Candidates(positions=pos[keep], response=response[keep].astype(np.float32),
                      scale=scales[keep].astype(np.float32)), noise


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
