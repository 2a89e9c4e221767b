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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi

from spfluo.algorithms.geometry import as_voxel_size

__all__ = ["Extraction", "box_voxels", "extract_particles", "normalize_particles",
           "extraction_peak_bytes"]

_BORDERS = ("pad", "skip")
_NORMALIZATIONS = (None, "zscore", "background")
# interpolated points per chunk (the coordinate arrays take 24 bytes a point)
_CHUNK_POINTS = 1 << 21
_SPLINE_PAD = 12


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


def _check_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"image must have shape (Z, Y, X) or (C, Z, Y, X), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"image is empty (shape {a.shape}); give a non-empty volume")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"image must be a real array, got dtype {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError("image contains NaN or infinite voxels; fix or mask them first")
    return a


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
    img = _check_image(image)
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
    n_channels = img.shape[0]
    shape = np.asarray(img.shape[1:])
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

    out = np.empty((keep.size, n_channels, d, d, d), dtype=np.float32)
    if keep.size:
        coeffs = [_prefilter(img[c]) for c in range(n_channels)]
        per_chunk = max(1, _CHUNK_POINTS // d**3)
        for start in range(0, keep.size, per_chunk):
            rows = keep[start:start + per_chunk]
            axes = p[rows][:, :, None] + offsets[None]  # (n, 3, D)
            coords = np.empty((3, rows.size, d, d, d), dtype=np.float64)
            coords[0] = axes[:, 0, :, None, None]
            coords[1] = axes[:, 1, None, :, None]
            coords[2] = axes[:, 2, None, None, :]
            inside = np.ones((rows.size, d, d, d), dtype=bool)
            for a in range(3):
                inside &= (coords[a] >= -0.5) & (coords[a] <= shape[a] - 0.5)
            coords += _SPLINE_PAD
            for c in range(n_channels):
                vals = ndi.map_coordinates(coeffs[c], coords, order=3, mode="mirror",
                                           prefilter=False, output=np.float32)
                if border == "pad" and not inside.all():
                    for j in np.flatnonzero(~inside.reshape(rows.size, -1).all(axis=1)):
                        fill = np.median(vals[j][inside[j]]) if inside[j].any() else 0.0
                        vals[j][~inside[j]] = fill
                out[start:start + rows.size, c] = vals
    if normalize is not None and keep.size:
        out = normalize_particles(out, method=normalize)
    return Extraction(particles=out, indices=keep.astype(np.int64), crosses_border=crosses,
                      voxel_size=v)


def extraction_peak_bytes(image_shape, n_particles: int, box: int) -> int:
    """Peak memory, in bytes, of :func:`extract_particles` of ``n_particles`` boxes of
    ``box^3`` voxels from an image of shape ``(C, Z, Y, X)``.

    The image and its spline coefficients (float32, with their margin), the particles
    (float32), and one chunk of interpolation coordinates (float64, 3 per point) with its
    mask and values.
    """
    c, z, y, x = (int(v) for v in image_shape)
    d3 = int(box) ** 3
    image = 4 * c * z * y * x
    coefficients = 4 * c * (z + 2 * _SPLINE_PAD) * (y + 2 * _SPLINE_PAD) * (x + 2 * _SPLINE_PAD)
    points = min(max(1, int(n_particles)), max(1, _CHUNK_POINTS // d3)) * d3
    return image + coefficients + 4 * int(n_particles) * c * d3 + points * (3 * 8 + 1 + 4)


def _prefilter(channel: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of a channel, with a mirrored margin of _SPLINE_PAD voxels."""
    padded = np.pad(channel, _SPLINE_PAD, mode="symmetric")
    return ndi.spline_filter(padded, order=3, output=np.float32, mode="mirror")
