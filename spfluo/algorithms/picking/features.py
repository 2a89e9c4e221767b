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

Every filter is evaluated only on a small box around each candidate
(:mod:`spfluo.algorithms.picking.local`): the slab projection on the lateral box the
largest 2D scale and the structure tensor need, the 3D filters on the 3 x 3 x 3 voxels
of the derivative stencil, the z profile along one column.  The features of a field are
computed tile by tile (:func:`field_features`), each candidate in the tile whose core
holds it; they do not depend on the tiles.
"""

from __future__ import annotations

import numpy as np

from spfluo.algorithms.geometry import as_voxel_size
from spfluo.algorithms.picking._validation import check_diameter, check_positions
from spfluo.algorithms.picking.candidates import (
    NoiseLevel,
    in_noise_units,
    nearest_peak,
    noise_level,
    peak_stats,
    profiles,
    round_index,
    smooth_tile,
)
from spfluo.algorithms.picking.local import (
    Region,
    box_values,
    correlate_valid,
    gather,
    gaussian_kernel,
    kernel_radius,
)
from spfluo.algorithms.picking.scales import z_window
from spfluo.algorithms.picking.tiles import (
    DEFAULT_MEMORY_BYTES,
    TileCounter,
    check_field,
    plan_tiles,
    read_region,
)

__all__ = ["FEATURE_NAMES", "particle_features", "field_features"]

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


_TENSOR_SCALES = (0.25, 0.5)
# gathered voxels per batch of candidates
_BATCH_VALUES = 1 << 21


# ----------------------------------------------------------------------------- features


def _hessian2_eig(hyy, hyx, hxx):
    tr = hyy + hxx
    disc = np.sqrt((hyy - hxx) ** 2 + 4 * hyx**2)
    return 0.5 * (tr + disc), 0.5 * (tr - disc)


def _derivatives(at, axes: tuple, spacing):
    """Value, gradient and Hessian by central differences of a smoothed volume.

    ``at(offset)`` gives the smoothed volume at the voxels ``idx + offset`` (clipped to
    the image), ``axes`` are the differentiated axes and ``spacing`` their voxel sizes
    (micrometres): returns ``value (N,)``, ``gradient (N, A)`` and ``hessian (N, A, A)``
    per micrometre.  The volume is smooth on the scale of a voxel (Gaussian-filtered),
    so second-order differences are accurate to a few percent.
    """
    unit = np.eye(3, dtype=np.int64)
    centre = at(np.zeros(3, np.int64))
    plus = [at(unit[a]) for a in axes]
    minus = [at(-unit[a]) for a in axes]
    grad = np.stack([(p - m) / (2 * h) for p, m, h in zip(plus, minus, spacing)], axis=1)
    k = len(axes)
    hess = np.empty((centre.shape[0], k, k))
    for i, a in enumerate(axes):
        hess[:, i, i] = (plus[i] - 2 * centre + minus[i]) / spacing[i] ** 2
        for j in range(i + 1, k):
            b = axes[j]
            cross = (at(unit[a] + unit[b]) - at(unit[a] - unit[b]) - at(unit[b] - unit[a])
                     + at(-unit[a] - unit[b])) / (4 * spacing[i] * spacing[j])
            hess[:, i, j] = hess[:, j, i] = cross
    return centre, grad, hess


def _patch_geometry(vs_yx: np.ndarray, radius: float):
    half = np.ceil(1.5 * radius / vs_yx).astype(int)
    oy = np.arange(-half[0], half[0] + 1)
    ox = np.arange(-half[1], half[1] + 1)
    dy, dx = np.meshgrid(oy * vs_yx[0], ox * vs_yx[1], indexing="ij")
    rho = np.hypot(dy, dx).ravel() / radius  # in radii
    theta = np.arctan2(dy, dx).ravel()
    return half, oy, ox, rho, theta


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Indices mirrored into ``[0, n)`` without repeating the edge (``numpy.pad`` "reflect")."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    i = np.abs(index) % period
    return np.where(i >= n, period - i, i)


class _Plane:
    """A lateral box of values around each candidate, in its plane: ``box[n, j, i]`` is the
    value at ``(y, x) = (idx_y - m_y + j, idx_x - m_x + i)``."""

    def __init__(self, box: np.ndarray, idx: np.ndarray, half):
        self.box, self.idx, self.half = box, idx, (int(half[0]), int(half[1]))

    def at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Values at image voxels ``ys (N, A)``, ``xs (N, B)`` (inside the box): (N, A, B)."""
        py = ys - (self.idx[:, 1, None] - self.half[0])
        px = xs - (self.idx[:, 2, None] - self.half[1])
        n = np.arange(len(self.idx))[:, None, None]
        return self.box[n, py[:, :, None], px[:, None, :]]


def _gradient(plane: _Plane, ys, xs, axis: int, size: int, step: float) -> np.ndarray:
    """``numpy.gradient`` of the plane (central inside, one-sided at the image border)
    along y (``axis`` 0) or x (1) at the image voxels ``ys x xs``: (N, A, B)."""
    q = ys if axis == 0 else xs
    lo = np.where(q > 0, q - 1, q)
    hi = np.where(q < size - 1, q + 1, q)
    if axis == 0:
        diff = plane.at(hi, xs) - plane.at(lo, xs)
        return diff / ((hi - lo)[:, :, None] * step)
    diff = plane.at(ys, hi) - plane.at(ys, lo)
    return diff / ((hi - lo)[:, None, :] * step)


def _slab_features(region: Region, idx: np.ndarray, vs: np.ndarray, radius: float,
                   diameter: float):
    """2D features of the slab projection (N, 29) and its patch features (N, 35).

    Per scale: intensity, gradient magnitude, Laplacian and Hessian eigenvalues (scale
    normalised, micrometres); then structure-tensor coherence and energy at two scales;
    then the radial profile, disk/annulus statistics and ring harmonics.
    """
    shape = region.image_shape
    vs_yx = vs[1:]
    w = z_window(vs, diameter)
    half, oy, ox, rho, theta = _patch_geometry(vs_yx, radius)
    scales = []
    for f in _SCALES_2D:
        sig = f * radius / vs_yx
        rad = np.array([kernel_radius(v) for v in sig])
        m = half + 1 if f in _TENSOR_SCALES else np.ones(2, int)
        scales.append((f, sig, rad, m))
    big = np.max([m + rad for _, _, rad, m in scales] + [half], axis=0)
    # the maximum projection along z over one diameter ("nearest" at the first and last
    # planes), on the lateral box of the largest scale
    starts = idx - np.array([w, big[0], big[1]])
    slab = gather(region, starts, (2 * w + 1, 2 * big[0] + 1, 2 * big[1] + 1)).max(axis=1)
    qy = _reflect(idx[:, 1, None] + oy[None, :], shape[1])  # patch rows, "reflect" border
    qx = _reflect(idx[:, 2, None] + ox[None, :], shape[2])
    out, tensor = [], []
    for f, sig, rad, m in scales:
        s = f * radius
        lo = big - m - rad
        sub = slab[:, lo[0]:lo[0] + 2 * (m[0] + rad[0]) + 1, lo[1]:lo[1] + 2 * (m[1] + rad[1]) + 1]
        sm = correlate_valid(correlate_valid(sub, gaussian_kernel(sig[0]), axis=1),
                             gaussian_kernel(sig[1]), axis=2)
        box = sm[:, None]

        def at(offset, box=box, m=m):
            return box_values(box, idx, (0, m[0], m[1]), offset[None], shape)[:, 0]

        value, grad, hess = _derivatives(at, (1, 2), vs_yx)
        l1, l2 = _hessian2_eig(hess[:, 0, 0], hess[:, 0, 1], hess[:, 1, 1])
        out += [value, s * np.linalg.norm(grad, axis=1), s**2 * (hess[:, 0, 0] + hess[:, 1, 1]),
                s**2 * l1, s**2 * l2]
        if f in _TENSOR_SCALES:
            # structure tensor: gradients of the smoothed plane, Gaussian-weighted over
            # 2 sigma, on the patch ("reflect" at the image border)
            plane = _Plane(sm, idx, m)
            py = _gradient(plane, qy, qx, 0, shape[1], vs_yx[0]).reshape(len(idx), -1)
            px = _gradient(plane, qy, qx, 1, shape[2], vs_yx[1]).reshape(len(idx), -1)
            weight = np.exp(-((rho * radius) ** 2) / (2 * (2 * s) ** 2))
            weight /= weight.sum()
            jyy, jxx, jyx = (py * py) @ weight, (px * px) @ weight, (py * px) @ weight
            m1, m2 = _hessian2_eig(jyy, jyx, jxx)
            energy = m1 + m2
            tensor += [(m1 - m2) / (energy + 1e-6 / s**2), s**2 * energy]
    patches = _Plane(slab, idx, big).at(qy, qx).reshape(len(idx), -1)
    return np.stack(out + tensor, axis=1), _patch_features(patches, rho, theta)


def _patch_features(patches: np.ndarray, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Radial profile, disk/annulus statistics and ring harmonics of lateral patches ``(N, P)``
    (``rho`` in radii and ``theta`` of each patch pixel): (N, 35)."""
    n = patches.shape[0]
    ring = np.minimum((rho / 1.5 * _N_RINGS).astype(int), _N_RINGS)  # ring index, 9 = outside
    member = np.zeros((rho.size, _N_RINGS))
    inside = ring < _N_RINGS
    member[np.flatnonzero(inside), ring[inside]] = 1.0
    counts = np.maximum(member.sum(axis=0), 1.0)
    mean = patches @ member / counts
    sq = (patches**2) @ member / counts
    std = np.sqrt(np.maximum(sq - mean**2, 0.0))
    radial = np.empty((n, 2 * _N_RINGS))
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
    harm = np.stack([np.abs(vals @ np.exp(-1j * k * theta[band])) / norm for k in _HARMONICS],
                    axis=1)
    return np.concatenate([radial, stats, harm], axis=1)


def _volume_features(region: Region, idx: np.ndarray, vs: np.ndarray, radius: float):
    """3D smoothed intensity, gradient, Laplacian and Hessian eigenvalues: (N, 18)."""
    shape = region.image_shape
    big = np.array([kernel_radius(max(_SCALES_3D) * radius / v) for v in vs])
    base = gather(region, idx - 1 - big, tuple(3 + 2 * big))
    out = []
    for f in _SCALES_3D:
        s = f * radius
        sig = s / vs
        rad = np.array([kernel_radius(v) for v in sig])
        lo = big - rad
        box = base[:, lo[0]:lo[0] + 3 + 2 * rad[0], lo[1]:lo[1] + 3 + 2 * rad[1],
                   lo[2]:lo[2] + 3 + 2 * rad[2]]
        for a in range(3):
            box = correlate_valid(box, gaussian_kernel(sig[a]), axis=a + 1)

        def at(offset, box=box):
            return box_values(box, idx, (1, 1, 1), offset[None], shape)[:, 0]

        value, grad, hess = _derivatives(at, (0, 1, 2), vs)
        eig = np.linalg.eigvalsh(hess)[:, ::-1]
        out += [value, s * np.linalg.norm(grad, axis=1), s**2 * np.trace(hess, axis1=1, axis2=2)]
        out += [s**2 * eig[:, k] for k in range(3)]
    return np.stack(out, axis=1)


def features_at(region: Region, positions: np.ndarray, vs: np.ndarray,
                diameter: float) -> np.ndarray:
    """The features (N, 85) float32 of positions whose filters lie in ``region`` (the volume
    smoothed and in noise units)."""
    radius = diameter / 2
    n = positions.shape[0]
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)
    shape = region.image_shape
    idx = round_index(positions, shape)
    # gathered values per candidate: slab, 3D box, z profile
    per_row = (shape[0] * (2 * kernel_radius(0.25 * diameter / min(vs[1:])) + 1) ** 2
               + int(np.prod([3 + 2 * kernel_radius(radius / v) for v in vs]))
               + (2 * z_window(vs, diameter) + 1) * int(np.prod(
                   [2 * (np.ceil(1.5 * radius / v) + 2 + kernel_radius(radius / v)) + 1
                    for v in vs[1:]])))
    step = max(1, _BATCH_VALUES // int(per_row))
    parts = []
    for k in range(0, n, step):
        i, p = idx[k:k + step], positions[k:k + step]
        f2, fp = _slab_features(region, i, vs, radius, diameter)
        f3 = _volume_features(region, i, vs, radius)
        prof = profiles(region, p[:, 1:], vs, diameter)
        _, fwhm, contrast = peak_stats(prof, nearest_peak(prof, p[:, 0], vs, diameter), vs,
                                        diameter)
        fz = np.stack([fwhm, contrast, prof.max(axis=1) - prof.mean(axis=1)], axis=1)
        parts.append(np.concatenate([f2, fp, f3, fz], axis=1))
    feats = np.concatenate(parts)
    # brightness: intensity features relative to the candidate's own intensity
    level = np.maximum(feats[:, _LEVEL], 1.0)[:, None]
    feats = np.where(_LINEAR, feats / level, np.where(_QUADRATIC, feats / level**2, feats))
    return np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def field_noise(field, plan) -> NoiseLevel:
    """The noise level of a field from its lattice of samples, tile core by tile core."""
    st = plan.stride
    parts = []
    for tile in plan.tiles:
        y0, y1, x0, x1 = tile.core
        ly = np.arange(-(-y0 // st) * st, y1, st)
        lx = np.arange(-(-x0 // st) * st, x1, st)
        block = np.asarray(field[:, y0:y1, x0:x1], dtype=np.float32)
        parts.append((ly // st, lx // st, block[:, ly - y0][:, :, lx - x0]))
    samples = np.empty((plan.shape[0], -(-plan.shape[1] // st), -(-plan.shape[2] // st)),
                       np.float32)
    for ys, xs, values in parts:
        samples[:, ys[:, None], xs[None, :]] = values
    return noise_level(samples)


def field_features(field, plan, positions: np.ndarray, vs: np.ndarray, diameter: float,
                   noise: NoiseLevel, counter=None) -> np.ndarray:
    """Features (N, 85) float32 of positions in a field read tile by tile.

    Parameters
    ----------
    field : array-like, shape (Z, Y, X)
        One channel (read by lateral slices).
    plan : TilePlan
        Its tiles (:func:`~spfluo.algorithms.picking.tiles.plan_tiles`).
    positions : ndarray, shape (N, 3)
        Centres ``(z, y, x)`` in voxels (rounded to the nearest voxel).
    vs : ndarray, shape (3,)
        Voxel size ``(z, y, x)``, micrometres.
    diameter : float
        Particle diameter, micrometres.
    noise : NoiseLevel
        Of the field (:func:`~spfluo.algorithms.picking.candidates.find_candidates`).
    counter : TileCounter, optional
        Told of every tile done.
    """
    counter = counter if counter is not None else TileCounter(len(plan))
    shape = plan.shape
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    idx = round_index(positions, shape)
    out = np.zeros((len(positions), len(FEATURE_NAMES)), np.float32)
    for tile in plan.tiles:
        y0, y1, x0, x1 = tile.core
        sel = np.flatnonzero((idx[:, 1] >= y0) & (idx[:, 1] < y1) & (idx[:, 2] >= x0)
                             & (idx[:, 2] < x1))
        if sel.size:
            region = read_region(field, tile, shape)
            vol = smooth_tile(region.data, vs, diameter)
            vol = in_noise_units(vol, noise) if noise.scale > 0 else np.zeros_like(vol)
            out[sel] = features_at(Region(vol, region.origin, shape), positions[sel], vs,
                                   diameter)
        counter.done("features")
    return out


def particle_features(image, positions, voxel_size, *, diameter: float,
                      memory_bytes: float = DEFAULT_MEMORY_BYTES,
                      tile: int | None = None) -> np.ndarray:
    """Features at particle positions (about 90, Fortun et al. 2018 sec. II-B), one row per position.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X)
        One channel of the field of view (raw intensities; expressed here in noise
        units, :func:`~spfluo.algorithms.picking.candidates.normalize_image`), an ndarray
        or any array-like read by lateral slices.
    positions : ndarray, shape (N, 3)
        Centres ``(z, y, x)`` in voxels (rounded to the nearest voxel).
    voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` in micrometres.
    diameter : float
        Particle diameter in micrometres: it sets every scale.
    memory_bytes : float, default 2e9
        Peak memory allowed (the field is read in tiles that fit).
    tile : int, optional
        Tile core size in voxels instead of the largest that fits.

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
    shape = check_field(image)
    vs = as_voxel_size(voxel_size)
    d = check_diameter(diameter, shape, vs)
    p = check_positions(positions, "positions", shape)
    plan = plan_tiles(shape, vs, d, memory_bytes=memory_bytes, core=tile)
    return field_features(image, plan, p, vs, d, field_noise(image, plan))
