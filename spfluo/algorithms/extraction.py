"""Extraction of particles: isotropic boxes around coordinates, all channels.

A field of view usually has anisotropic voxels (z coarser than x and y); the
reconstruction needs cubic boxes of isotropic voxels.  :func:`extract_particles` samples,
around each coordinate, a cube of a given physical size on an isotropic grid of a given
voxel size, by cubic B-spline interpolation of every channel (Fortun et al. 2018 sec. II-B).

Geometry: the box has ``D = round(box_size / voxel_size)`` voxels per side and its centre
voxel ``(D//2, D//2, D//2)`` (the project's box centre, ``docs/conventions.md``) lies exactly on
the coordinate, so a particle whose true centre is ``c`` (micrometres) and that was
extracted around ``p`` has the translation ``(c - p) / voxel_size`` voxels in its box.
Voxel ``k`` of the box (along one axis) samples the image at
``p / v_image + (k - D//2) * voxel_size / v_image`` (image voxels).

Borders: a box that reaches more than half an image voxel beyond the first or last voxel
centre along some axis crosses the border; with ``border="pad"`` its outside voxels take
the median of its inside voxels (per channel), with ``border="skip"`` it is left out.

Streaming: the image is never needed whole.  Each box is read with its resampling halo
(the spline support and :data:`SPLINE_HALO` voxels over which the spline prefilter's
recursion decays to below float32 rounding) from any array-like that reads by slices,
such as a memory map of the file (:mod:`spfluo.io.fields`); the values are those of the
spline of the whole image, mirrored :data:`_SPLINE_PAD` voxels beyond its border.
:func:`iter_extractions` runs the positions in batches of :data:`EXTRACTION_BATCH`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from spfluo.algorithms.geometry import as_voxel_size

__all__ = ["Extraction", "box_voxels", "extract_particles", "iter_extractions",
           "normalize_particles", "extraction_peak_bytes", "EXTRACTION_BATCH", "SPLINE_HALO"]

_BORDERS = ("pad", "skip")
_NORMALIZATIONS = (None, "zscore", "background")
# the image is mirrored this many voxels beyond its border before the spline prefilter
_SPLINE_PAD = 12
#: Voxels of image read beyond a box's spline support: the prefilter's recursion (pole
#: 2 - sqrt(3), 0.27 per voxel) decays over them to 1e-9, below float32 rounding.
SPLINE_HALO = 16
# index arrays and the spline's line buffers of one box, bytes (measured: < 50 kB)
_SMALL_BUFFERS = 100_000
#: Particles extracted per batch by :func:`iter_extractions` (the job's memory bound).
EXTRACTION_BATCH = 256


@dataclass(frozen=True)
class Extraction:
    """Particles extracted from one image.

    Attributes
    ----------
    particles : ndarray, shape (K, C, D, D, D), float32
        The extracted particles, isotropic voxels.
    indices : ndarray, shape (K,), int64
        Row of each particle in the input positions (skipped rows are missing).
    crosses_border : ndarray, shape (N,), bool
        For every input position, whether its box crosses the image border (padded or
        skipped according to ``border``).
    voxel_size : float
        Isotropic voxel size of the particles, micrometres.
    """

    particles: np.ndarray
    indices: np.ndarray
    crosses_border: np.ndarray
    voxel_size: float

    def __len__(self) -> int:
        return int(self.particles.shape[0])


def box_voxels(box_size: float, voxel_size: float) -> int:
    """Number of voxels per side of a box: ``round(box_size / voxel_size)``.

    Parameters
    ----------
    box_size : float
        Side of the box, micrometres (> 0).
    voxel_size : float
        Isotropic voxel size, micrometres (> 0).

    Returns
    -------
    int
        ``D >= 4``.
    """
    b = _positive(box_size, "box_size")
    v = _positive(voxel_size, "voxel_size")
    d = int(round(b / v))
    if d < 4:
        raise ValueError(f"box_size {b:g} µm at voxel_size {v:g} µm gives {d} voxels per side; "
                         "use a box of at least 4 voxels (a larger box_size or a smaller "
                         "voxel_size)")
    return d


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number of micrometres, got {value!r}") \
            from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number of micrometres, got {value!r}")
    return v


def _channels(image) -> list:
    """The channels of an image as a list of array-likes ``(Z, Y, X)`` of one shape: an
    array ``(Z, Y, X)`` or ``(C, Z, Y, X)`` (an ndarray or a memory map), or a sequence of
    per-channel array-likes (e.g. :class:`spfluo.io.fields.FieldReader`).  No voxel is
    read."""
    if isinstance(image, (list, tuple)):
        channels = list(image)
    else:
        a = image if hasattr(image, "shape") and hasattr(image, "dtype") else np.asarray(image)
        if a.ndim == 3:
            channels = [a]
        elif a.ndim == 4:
            channels = [a[c] for c in range(a.shape[0])]
        else:
            raise ValueError(f"image must have shape (Z, Y, X) or (C, Z, Y, X), got shape "
                             f"{tuple(a.shape)}")
    if not channels:
        raise ValueError("image has no channel; give at least one (Z, Y, X) volume")
    shapes = {tuple(int(n) for n in getattr(c, "shape", ())) for c in channels}
    shape = shapes.pop()
    if shapes or len(shape) != 3:
        raise ValueError("image channels must be (Z, Y, X) volumes of one shape, got shapes "
                         f"{sorted({tuple(c.shape) for c in channels})}")
    if min(shape) == 0:
        raise ValueError(f"image is empty (shape {shape}); give a non-empty volume")
    for c in channels:
        if np.dtype(c.dtype).kind not in "biuf":
            raise ValueError(f"image must be a real array, got dtype {c.dtype}")
    return channels


def _symmetric(index: np.ndarray, n: int) -> np.ndarray:
    """Image indices of the voxels ``index`` of the image mirrored beyond its border
    (``numpy.pad`` "symmetric", the edge voxel repeated)."""
    m = np.mod(index, 2 * n)
    return np.where(m >= n, 2 * n - 1 - m, m)


def _spline_region(channel, lo: np.ndarray, hi: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of the voxels ``lo`` to ``hi`` (exclusive, indices of the
    image padded by ``_SPLINE_PAD``) of one channel, float32."""
    index = [_symmetric(np.arange(lo[a], hi[a]) - _SPLINE_PAD, int(shape[a])) for a in range(3)]
    first = [int(i.min()) for i in index]
    block = np.asarray(channel[first[0]:int(index[0].max()) + 1,
                               first[1]:int(index[1].max()) + 1,
                               first[2]:int(index[2].max()) + 1], dtype=np.float32)
    region = block[np.ix_(*[i - f for i, f in zip(index, first)])]
    if not np.isfinite(region).all():
        raise ValueError("image contains NaN or infinite voxels (near voxel (z, y, x) = "
                         f"{tuple(int(v) for v in (lo + hi) // 2 - _SPLINE_PAD)}); fix or mask "
                         "them first")
    return ndi.spline_filter(region, order=3, output=np.float32, mode="mirror")


def _extract_box(channels, position, offsets, shape, border: str) -> np.ndarray:
    """One box ``(C, D, D, D)`` around ``position`` (voxels), read with its halo."""
    d = offsets.shape[1]
    axes = position[:, None] + offsets  # (3, D) image voxels sampled along each axis
    inside_axes = [(axes[a] >= -0.5) & (axes[a] <= shape[a] - 0.5) for a in range(3)]
    # the spline support of the samples inside the image, widened by the halo
    span = [axes[a][inside_axes[a]] for a in range(3)]
    lo = np.array([np.floor(s.min()) for s in span], dtype=np.int64) + _SPLINE_PAD - 1
    hi = np.array([np.floor(s.max()) for s in span], dtype=np.int64) + _SPLINE_PAD + 3
    lo = np.maximum(lo - SPLINE_HALO, 0)
    hi = np.minimum(hi + SPLINE_HALO, shape + 2 * _SPLINE_PAD)
    coords = np.empty((3, d, d, d), dtype=np.float64)
    coords[0] = (axes[0] + _SPLINE_PAD - lo[0])[:, None, None]
    coords[1] = (axes[1] + _SPLINE_PAD - lo[1])[None, :, None]
    coords[2] = (axes[2] + _SPLINE_PAD - lo[2])[None, None, :]
    inside = (inside_axes[0][:, None, None] & inside_axes[1][None, :, None]
              & inside_axes[2][None, None, :])
    out = np.empty((len(channels), d, d, d), dtype=np.float32)
    for c, channel in enumerate(channels):
        coeffs = _spline_region(channel, lo, hi, shape)
        vals = ndi.map_coordinates(coeffs, coords, order=3, mode="mirror", prefilter=False,
                                   output=np.float32)
        if border == "pad" and not inside.all():
            vals[~inside] = np.median(vals[inside])
        out[c] = vals
    return out


def normalize_particles(particles, *, method: str | None = "zscore") -> np.ndarray:
    """Normalise the intensities of each particle and channel.

    Parameters
    ----------
    particles : ndarray, shape (N, C, D, D, D)
    method : {None, "zscore", "background"}
        ``None``: unchanged; ``"zscore"``: zero mean and unit standard deviation over
        the box; ``"background"``: the voxels outside the sphere inscribed in the box
        (the background around a centred particle) get zero mean and unit standard
        deviation (as RELION normalises particles).

    Returns
    -------
    ndarray, shape (N, C, D, D, D), float32
        A constant particle becomes zeros.
    """
    p = np.asarray(particles, dtype=np.float32)
    if p.ndim != 5:
        raise ValueError(f"particles must have shape (N, C, D, D, D), got shape {p.shape}")
    if method not in _NORMALIZATIONS:
        raise ValueError(f"method must be None, 'zscore' or 'background', got {method!r}")
    if method is None:
        return p.copy()
    if method == "zscore":
        ref = p.reshape(p.shape[:2] + (-1,))
    else:
        shape = p.shape[2:]
        grid = np.indices(shape, dtype=np.float64)
        centre = np.array([s // 2 for s in shape], dtype=np.float64)[:, None, None, None]
        r = np.sqrt(((grid - centre) ** 2).sum(axis=0))
        outside = r > min(shape) / 2 - 0.5
        ref = p[..., outside]
    mean = ref.mean(axis=-1, dtype=np.float64)
    std = ref.std(axis=-1, dtype=np.float64)
    std = np.where(std > 0, std, np.inf)
    out = (p - mean[..., None, None, None]) / std[..., None, None, None]
    return out.astype(np.float32)


def extract_particles(image, positions, image_voxel_size, *, box_size: float,
                      voxel_size: float, border: str = "pad",
                      normalize: str | None = None) -> Extraction:
    """Cut isotropic cubic boxes around positions in an image, every channel.

    Parameters
    ----------
    image : ndarray, shape (C, Z, Y, X) or (Z, Y, X)
        The field of view (all channels).
    positions : ndarray, shape (N, 3)
        Particle centres ``(z, y, x)`` in voxels of the image (sub-voxel allowed).
    image_voxel_size : float or tuple of 3 floats
        ``(z, y, x)`` voxel size of the image, micrometres.
    box_size : float
        Side of the cubic box, micrometres.
    voxel_size : float
        Isotropic voxel size of the particles, micrometres.
    border : {"pad", "skip"}, default "pad"
        What to do with boxes that cross the image border: fill the outside with the
        median of the inside (per channel), or leave the particle out.
    normalize : {None, "zscore", "background"}, optional
        Intensity normalisation of each particle and channel
        (:func:`normalize_particles`).

    Returns
    -------
    Extraction
        Particles ``(K, C, D, D, D)`` float32 with ``D = round(box_size / voxel_size)``
        (:func:`box_voxels`), the row of each, and the border flags.

    Notes
    -----
    Cubic B-spline interpolation (``scipy.ndimage.map_coordinates``, order 3, the image
    prefiltered once per channel, mirror boundary); samples beyond the last voxel centre
    and within half a voxel use the spline's mirror extension.
    """
    channels = _channels(image)
    vs = as_voxel_size(image_voxel_size)
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3) in voxels (z, y, x), got shape "
                         f"{p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("positions contain NaN or infinite values; give finite voxel positions")
    d = box_voxels(box_size, voxel_size)
    v = float(voxel_size)
    if border not in _BORDERS:
        raise ValueError(f"border must be 'pad' or 'skip', got {border!r}")
    if normalize not in _NORMALIZATIONS:
        raise ValueError(f"normalize must be None, 'zscore' or 'background', got {normalize!r}")
    shape = np.asarray(channels[0].shape, dtype=np.int64)
    if p.size:
        outside_image = ((p < -0.5) | (p > shape - 0.5)).any(axis=1)
        if outside_image.any():
            k = int(np.flatnonzero(outside_image)[0])
            raise ValueError(f"positions row {k} at (z, y, x) = {p[k].tolist()} voxels is "
                             f"outside the image of shape {tuple(int(s) for s in shape)}; give "
                             "positions in voxels of this image")

    # sample coordinates, separable: axis a of box voxel k -> p_a + (k - D//2) v / vs_a
    offsets = (np.arange(d) - d // 2)[None, :] * (v / vs)[:, None]  # (3, D)
    lo = p + offsets[:, 0]  # (N, 3) first sample along each axis
    hi = p + offsets[:, -1]
    crosses = ((lo < -0.5) | (hi > shape - 0.5)).any(axis=1)
    keep = np.flatnonzero(~crosses) if border == "skip" else np.arange(p.shape[0])

    out = np.empty((keep.size, len(channels), d, d, d), dtype=np.float32)
    for j, row in enumerate(keep):
        out[j] = _extract_box(channels, p[row], offsets, shape, border)
    if normalize is not None and keep.size:
        out = normalize_particles(out, method=normalize)
    return Extraction(particles=out, indices=keep.astype(np.int64), crosses_border=crosses,
                      voxel_size=v)


def iter_extractions(image, positions, image_voxel_size, *, batch: int = EXTRACTION_BATCH,
                     **options):
    """:func:`extract_particles` in batches of ``batch`` positions: yields ``(rows,
    Extraction)`` where ``rows`` are the rows of ``positions`` in the batch (the
    extraction's ``indices`` index ``rows``).  ``options`` are those of
    :func:`extract_particles`; the peak memory is one batch's particles."""
    p = np.asarray(positions, dtype=np.float64)
    if p.ndim == 1 and p.size == 0:
        p = p.reshape(0, 3)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive number of particles, got {batch!r}")
    for start in range(0, max(len(p), 1), int(batch)):
        rows = np.arange(start, min(start + int(batch), len(p)))
        yield rows, extract_particles(image, p[rows], image_voxel_size, **options)


def extraction_peak_bytes(image_shape, n_particles: int, box: int, voxel_ratio=1.0) -> int:
    """Peak memory, in bytes, of :func:`extract_particles` of ``n_particles`` boxes of
    ``box^3`` voxels from an image of shape ``(C, Z, Y, X)`` (the job streams them: at
    most :data:`EXTRACTION_BATCH` at a time).

    ``voxel_ratio`` is the particles' voxel size over the image's, per axis ``(z, y, x)``
    (or one number).  Counted: the particles (float32), and for one box its region of
    the image with the halo (the block read, its mirrored copy and its spline
    coefficients, float32), the interpolation coordinates (float64, 3 per voxel), the
    values, the box's channels, the border masks and the inside values (their median),
    and 100 kB of small buffers (index arrays, spline lines).  The image itself is read
    region by region.
    """
    c = int(image_shape[0])
    d = int(box)
    ratio = np.broadcast_to(np.asarray(voxel_ratio, dtype=np.float64), (3,))
    side = [min(int(np.ceil((d - 1) * r)) + 4 + 2 * SPLINE_HALO, int(n) + 2 * _SPLINE_PAD)
            for r, n in zip(ratio, image_shape[1:])]
    region = int(np.prod(side))
    return int(4 * (int(n_particles) + 1) * c * d**3 + 3 * 4 * region
               + d**3 * (3 * 8 + 4 + 2 + 4) + _SMALL_BUFFERS)
